//! RewardService and OfferService.

use axum::http::Method;
use imprint_gateway::pb::imprint::v2::{
    offer_service_client::OfferServiceClient, reward_service_client::RewardServiceClient, *,
};
use serde_json::json;

use crate::{
    fixtures::*,
    harness::{assert_authenticated, req, FakeUpstream, Reply, TestGateway},
};

#[tokio::test]
async fn search_rewards() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/rewards",
        Reply::ok(page(&[reward_json()], false, 1)),
    );
    let got = RewardServiceClient::new(gw.channel.clone())
        .search_rewards(req(SearchRewardsRequest {
            transaction_event_id: s("40fa8333"),
            limit: Some(3),
            starting_after: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        SearchRewardsResponse {
            data: vec![reward()],
            has_more: false,
            total: 1
        }
    );
    let r = up.only_request();
    assert_eq!(
        r.query.as_deref(),
        Some("transaction_event_id=40fa8333&limit=3")
    );
    assert_authenticated(&r);
}

#[tokio::test]
async fn get_reward() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/rewards/2EE24580",
        Reply::ok(reward_json()),
    );
    let got = RewardServiceClient::new(gw.channel.clone())
        .get_reward(req(GetRewardRequest {
            reward_id: "2EE24580".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, reward());
    assert_authenticated(&up.only_request());
}

#[tokio::test]
async fn update_reward_is_a_patch() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::PATCH,
        "/v2/rewards/2EE24580",
        Reply::ok(reward_json()),
    );
    let got = RewardServiceClient::new(gw.channel.clone())
        .update_reward(req(UpdateRewardRequest {
            reward_id: "2EE24580".into(),
            amount: Some(0),
            status: RewardStatus::Available as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, reward());
    let r = up.only_request();
    assert_eq!(r.method, Method::PATCH);
    // An explicit zero is sent: set-to-zero differs from unset.
    assert_eq!(r.json(), json!({"amount":0,"status":"AVAILABLE"}));
    assert_authenticated(&r);
}

#[tokio::test]
async fn get_offer() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    up.on(
        Method::GET,
        "/v2/offers",
        Reply::ok(r#"{"id":"2ade1a36","is_prescreened":true,"title":"Welcome Offer: Earn $25","description":"Sign-up and spend $500.","extra":1}"#),
    );
    let got = OfferServiceClient::new(gw.channel.clone())
        .get_offer(req(GetOfferRequest {
            partner_customer_id: "P-9".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        Offer {
            id: "2ade1a36".into(),
            is_prescreened: true,
            title: "Welcome Offer: Earn $25".into(),
            description: "Sign-up and spend $500.".into(),
        }
    );
    let r = up.only_request();
    assert_eq!(
        (r.method.clone(), r.query.as_deref()),
        (Method::GET, Some("partner_customer_id=P-9"))
    );
    assert_authenticated(&r);
}
