//! A whole flow through the gateway in front of the emulator: session and
//! customer, payment methods, an intent, a transaction's lifecycle, rewards.

use imprint_gateway::{
    pb::imprint::v2::{
        customer_service_client::CustomerServiceClient,
        customer_session_service_client::CustomerSessionServiceClient,
        sandbox_service_client::SandboxServiceClient,
        transaction_intent_service_client::TransactionIntentServiceClient,
        transaction_service_client::TransactionServiceClient, *,
    },
    sandbox::{Emulator, EmulatorConfig, Product},
};
use tonic::Code;

use crate::harness::{req, TestGateway, API_KEY, MERCHANT_KEY};

#[tokio::test]
async fn session_to_refund_with_rewards() {
    let mut config = EmulatorConfig {
        api_keys: vec![API_KEY.to_string()],
        ..EmulatorConfig::default()
    };
    config.products[0] = Product::new(
        "default",
        Some(MERCHANT_KEY),
        config.products[0].reward_program,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = Emulator::new(config).serve(listener).await.unwrap();
    let gw = TestGateway::start_with(&emulator.url(), &[]).await;
    let ch = gw.channel.clone();

    let session = CustomerSessionServiceClient::new(ch.clone())
        .create_customer_session(req(CreateCustomerSessionRequest {
            partner_customer_id: Some("FLOW-1".into()),
            customer_history: Some(CustomerAccountHistory {
                first_name: Some("Flo".into()),
                last_name: Some("approve".into()),
                ..Default::default()
            }),
            customer_metadata: [("loyalty_id".to_string(), "L-9".to_string())].into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!session.client_secret.is_empty());
    assert!(session.expires_at.is_some());

    let mut customers = CustomerServiceClient::new(ch.clone());
    let found = customers
        .search_customers(req(SearchCustomersRequest {
            partner_customer_id: Some("FLOW-1".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.total, 1);
    let customer_id = found.data[0].id.clone();
    let customer = customers
        .get_customer(req(GetCustomerRequest {
            customer_id: customer_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer.first_name.as_deref(), Some("Flo"));

    // The approved application issued a card.
    let pms = customers
        .list_customer_payment_methods(req(ListCustomerPaymentMethodsRequest {
            customer_id: customer_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pms.data.len(), 1);
    let card = &pms.data[0];
    assert_eq!(card.r#type, PaymentMethodType::Card as i32);
    assert_eq!(card.status, PaymentMethodStatus::Active as i32);

    let intent = TransactionIntentServiceClient::new(ch.clone())
        .create_transaction_intent(req(CreateTransactionIntentRequest {
            customer_id: customer_id.clone(),
            payment_method_id: Some(card.id.clone()),
            amount: Some(8000),
            currency: "USD".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(intent.status, TransactionIntentStatus::Confirmed as i32);

    let mut sandbox = SandboxServiceClient::new(ch.clone());
    let approved = sandbox
        .simulate_transaction_event(req(SimulateTransactionEventRequest {
            payment_method_id: card.id.clone(),
            status: TransactionStatus::Approved as i32,
            amount: Some(8000),
            currency: Some("USD".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let transaction_id = approved.transaction_id.clone().unwrap();
    let step = |status: TransactionStatus| {
        req(SimulateTransactionEventRequest {
            transaction_id: Some(transaction_id.clone()),
            payment_method_id: card.id.clone(),
            status: status as i32,
            ..Default::default()
        })
    };
    let captured = sandbox
        .simulate_transaction_event(step(TransactionStatus::Captured))
        .await
        .unwrap();
    assert_eq!(
        captured.into_inner().status,
        TransactionStatus::Captured as i32
    );
    // An illegal transition surfaces as ABORTED.
    let err = sandbox
        .simulate_transaction_event(step(TransactionStatus::Voided))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    sandbox
        .simulate_reward(req(SimulateRewardRequest {
            customer_id: customer_id.clone(),
            reward_type: SimulatedRewardType::Delayed as i32,
        }))
        .await
        .unwrap();
    let balance = customers
        .get_rewards_balance(req(GetRewardsBalanceRequest {
            customer_id: customer_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        balance.reward_balance, 400,
        "5% of 8000, available after processing"
    );

    sandbox
        .simulate_transaction_event(step(TransactionStatus::Refunded))
        .await
        .unwrap();
    let txn = TransactionServiceClient::new(ch.clone())
        .get_transaction(req(GetTransactionRequest {
            transaction_id: transaction_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(txn.status, TransactionStatus::Refunded as i32);
    assert_eq!(txn.intent_id.as_deref(), Some(intent.id.as_str()));
    assert_eq!(txn.amount, 8000);

    let rewards = customers
        .list_customer_rewards(req(ListCustomerRewardsRequest {
            customer_id: customer_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rewards.data.len(), 1);
    assert_eq!(
        rewards.data[0].status,
        RewardStatus::PendingDeduction as i32
    );
    assert_eq!(rewards.data[0].r#type, RewardType::Transaction as i32);
}
