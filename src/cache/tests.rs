//! Layer tests without sockets: keys, products, single flight.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use prost::Message as _;
use secrecy::SecretString;
use tower::{service_fn, Layer as _, ServiceExt as _};

use super::*;
use crate::{
    credentials::{AuthScheme, Credential, CredentialStore},
    pb::imprint::v2::SearchCustomersRequest,
    translate,
    upstream::{test_support::request, UpstreamError, UpstreamRequest, UpstreamResponse},
};

fn credential(key: &str, merchant: &str) -> Credential {
    Credential::new(
        SecretString::from(key.to_owned()),
        Some(SecretString::from(merchant.to_owned())),
        AuthScheme::Basic,
    )
    .unwrap()
}

/// A counting upstream answering `{"n":<count>}`.
fn upstream(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    UpstreamRequest,
    Response = UpstreamResponse,
    Error = UpstreamError,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    service_fn(move |_r: UpstreamRequest| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok::<_, UpstreamError>(UpstreamResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(format!("{{\"n\":{n}}}")),
                decoded: None,
            })
        }
    })
}

#[tokio::test]
async fn the_key_includes_the_credential_and_the_product() {
    let store = Arc::new(CredentialStore::new(Some(credential("k1", "m1"))));
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(CacheConfig::default(), store.clone());
    let svc = layer.layer(upstream(calls.clone()));
    svc.clone().oneshot(request()).await.unwrap();
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Same key, another merchant key (product): its own entry.
    store.replace(credential("k1", "m2"));
    let other = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(other.body, Bytes::from("{\"n\":2}"));
    // Another API key, same merchant key: its own entry too.
    store.replace(credential("k2", "m1"));
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Back to the first: still cached.
    store.replace(credential("k1", "m1"));
    let first = svc.oneshot(request()).await.unwrap();
    assert_eq!(first.body, Bytes::from("{\"n\":1}"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_cancelled_leader_strands_no_waiter() {
    let store = Arc::new(CredentialStore::new(Some(credential("k1", "m1"))));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheConfig::default(), store).layer(upstream(calls.clone()));
    let leader = tokio::spawn(svc.clone().oneshot(request()));
    tokio::task::yield_now().await;
    let waiter = tokio::spawn(svc.clone().oneshot(request()));
    leader.abort();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is answered")
        .unwrap()
        .unwrap();
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn entries_expire_at_their_ttl() {
    let store = Arc::new(CredentialStore::new(Some(credential("k1", "m1"))));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut config = CacheConfig::default();
    config
        .ttl
        .insert("GetCustomer".into(), std::time::Duration::from_millis(100));
    let svc = CacheLayer::new(config, store).layer(upstream(calls.clone()));
    svc.clone().oneshot(request()).await.unwrap();
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // moka keeps its own clock: a short real wait.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    svc.oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn the_rest_call_is_canonical_so_keys_neither_split_nor_merge() {
    // The same message with its fields in another wire order (protobuf
    // concatenation merges): the same REST call, so the same key.
    let a = SearchCustomersRequest {
        partner_customer_id: Some("P1".into()),
        limit: Some(5),
        ..Default::default()
    };
    let forward = a.encode_to_vec();
    let mut reversed = SearchCustomersRequest {
        limit: Some(5),
        ..Default::default()
    }
    .encode_to_vec();
    reversed.extend(
        SearchCustomersRequest {
            partner_customer_id: Some("P1".into()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_ne!(forward, reversed);
    let b = SearchCustomersRequest::decode(reversed.as_slice()).unwrap();
    let (ca, cb) = (translate::build(&a).unwrap(), translate::build(&b).unwrap());
    assert_eq!(ca.path_and_query, cb.path_and_query);
    assert_eq!(ca.body, cb.body);
    // Unset differs from a set default: a different request to Imprint,
    // so a different key.
    let zero = SearchCustomersRequest {
        partner_customer_id: Some("P1".into()),
        starting_after: Some(String::new()),
        ..Default::default()
    };
    let unset = SearchCustomersRequest {
        partner_customer_id: Some("P1".into()),
        ..Default::default()
    };
    assert_ne!(
        translate::build(&zero).unwrap().path_and_query,
        translate::build(&unset).unwrap().path_and_query
    );
}

#[tokio::test]
async fn invalidation_by_tag_rpc_and_webhook_hook() {
    let store = Arc::new(CredentialStore::new(Some(credential("k1", "m1"))));
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(CacheConfig::default(), store);
    let cache = layer.cache().clone();
    let svc = layer.layer(upstream(calls.clone()));
    svc.clone().oneshot(request()).await.unwrap();
    cache.invalidate(ResourceKind::Customer, "other");
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    cache.invalidate(ResourceKind::Customer, "c1");
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    cache.purge_rpc("imprint.v2.CustomerService/GetCustomer");
    svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    cache.purge_all();
    svc.oneshot(request()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let s = cache.snapshot().await;
    assert_eq!((s.hits, s.misses, s.entries), (1, 4, 1));
}

#[tokio::test]
async fn a_404_is_remembered_only_when_configured() {
    for (not_found_ttl, expected_calls) in [(0, 2), (60, 1)] {
        let store = Arc::new(CredentialStore::new(Some(credential("k1", "m1"))));
        let calls = Arc::new(AtomicUsize::new(0));
        let config = CacheConfig {
            not_found_ttl: std::time::Duration::from_secs(not_found_ttl),
            ..CacheConfig::default()
        };
        let counter = calls.clone();
        let svc = CacheLayer::new(config, store).layer(service_fn(move |_r: UpstreamRequest| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<UpstreamResponse, _>(UpstreamError::Status {
                    status: StatusCode::NOT_FOUND,
                    error: Box::default(),
                    retry_after: None,
                })
            }
        }));
        for _ in 0..2 {
            let err = svc.clone().oneshot(request()).await.unwrap_err();
            assert!(matches!(
                err,
                UpstreamError::Status { status, .. } if status == StatusCode::NOT_FOUND
            ));
        }
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
    }
}

#[tokio::test]
async fn errors_are_shared_with_the_flight_but_not_stored() {
    let store = Arc::new(CredentialStore::new(Some(credential("k1", "m1"))));
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = CacheLayer::new(CacheConfig::default(), store).layer(service_fn(
        move |_r: UpstreamRequest| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Err::<UpstreamResponse, _>(UpstreamError::Status {
                    status: StatusCode::BAD_GATEWAY,
                    error: Box::default(),
                    retry_after: None,
                })
            }
        },
    ));
    let flight = (0..10).map(|_| svc.clone().oneshot(request()));
    let results = futures::future::join_all(flight).await;
    assert!(results.iter().all(|r| matches!(
        r,
        Err(UpstreamError::Status { status, .. }) if *status == StatusCode::BAD_GATEWAY
    )));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let _ = svc.oneshot(request()).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
