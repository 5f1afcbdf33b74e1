//! Key management end to end: products picked with `x-imprint-product`,
//! the Keys resource, rotation (scripted upstream and emulator, under load,
//! failing, across a restart, across two replicas sharing Redis), the admin
//! policy and the audit log.

use std::{path::Path, time::Duration};

use axum::http::Method;
use base64::Engine as _;
use imprint_gateway::{
    pb::{
        gateway::v1::{
            admin_service_client::AdminServiceClient,
            key_management_service_client::KeyManagementServiceClient, CredentialState,
            ListAuditEventsRequest, ListCredentialsRequest, RotateCredentialRequest,
        },
        imprint::v2::{
            customer_service_client::CustomerServiceClient, key_service_client::KeyServiceClient,
            transaction_intent_service_client::TransactionIntentServiceClient, CreateKeyRequest,
            DeleteKeyRequest, GetCustomerRequest, ListTransactionIntentsRequest,
        },
    },
    sandbox::{seed::JOHN, Emulator, EmulatorConfig, FaultRule, Product, RunningEmulator},
};
use tonic::{metadata::MetadataValue, transport::Channel, Code};

use crate::{
    fixtures::customer_json,
    harness::{
        req, tempdir::Dir, with_token, FakeUpstream, GatewayProcess, Recorded, RedisServer, Reply,
        TestGateway, API_KEY, MERCHANT_KEY,
    },
};

pub const ADMIN_TOKEN: &str = "caller-token-keys-admin";
pub const COBRAND_TOKEN: &str = "caller-token-cobrand";
pub const COBRAND_KEY: &str = "sk_test_cobrand_b_key";
pub const COBRAND_MERCHANT: &str = "mk_test_cobrand_b";
/// What the scripted upstream answers to `POST /v2/keys`.
pub const CREATED_KEY: &str = "sk_test_created_by_rotation_1";
pub const MASTER_KEY_HEX: &str = "6b9f3c2a1d8e7f60a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2";

const CALLERS: &str = r#"
[[callers]]
name = "tester"
token = "caller-token-all"
allow = ["*"]

[[callers]]
name = "ops"
token = "caller-token-keys-admin"
admin = true
allow = ["*"]
products = ["*"]

[[callers]]
name = "ops-cobrand"
token = "caller-token-keys-admin-cobrand"
admin = true
allow = ["*"]
products = ["cobrand-b"]

[[callers]]
name = "cobrand-only"
token = "caller-token-cobrand"
allow = ["*"]
products = ["cobrand-b"]
"#;

/// The caller tokens file above, in `dir`.
fn callers_file(dir: &Dir) -> String {
    let path = dir.0.join("callers-keys.toml");
    std::fs::write(&path, CALLERS).unwrap();
    path.display().to_string()
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn fp(key: &str) -> String {
    imprint_gateway::credentials::fingerprint(key)
}

fn admin<T>(message: T) -> tonic::Request<T> {
    with_token(message, ADMIN_TOKEN)
}

fn with_product<T>(mut r: tonic::Request<T>, product: &str) -> tonic::Request<T> {
    r.metadata_mut().insert(
        "x-imprint-product",
        MetadataValue::try_from(product).unwrap(),
    );
    r
}

/// A gateway with the keys tests' callers, its data under `data`.
async fn gateway(url: &str, dir: &Dir, extra: &[(&str, &str)]) -> TestGateway {
    let callers = callers_file(dir);
    let data = dir.0.join("data").display().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("GATEWAY_CALLER_TOKENS_FILE", callers.as_str()),
        ("GATEWAY_DATA_DIR", data.as_str()),
        ("GATEWAY__CREDENTIALS__DRAIN_TIMEOUT", "10s"),
    ];
    env.extend_from_slice(extra);
    TestGateway::start_with(url, &env).await
}

/// [`gateway`] with a second product, `cobrand-b`: its API key from the
/// environment variable `COBRAND_KEY_VAR`, its merchant key from a file.
async fn gateway_with_cobrand(url: &str, dir: &Dir, extra: &[(&str, &str)]) -> TestGateway {
    let merchant = dir.0.join("cobrand-merchant");
    std::fs::write(&merchant, format!("{COBRAND_MERCHANT}\n")).unwrap();
    let products = format!(
        r#"[{{ name = "cobrand-b", api_key_env = "COBRAND_KEY_VAR", merchant_key_file = "{}" }}]"#,
        merchant.display()
    );
    let mut env: Vec<(&str, &str)> = vec![
        ("GATEWAY__CREDENTIALS__PRODUCTS", products.as_str()),
        ("COBRAND_KEY_VAR", COBRAND_KEY),
    ];
    env.extend_from_slice(extra);
    gateway(url, dir, &env).await
}

/// The emulator, knowing the harness's key and merchant key.
async fn emulator() -> RunningEmulator {
    emulator_with(Vec::new()).await
}

async fn emulator_with(faults: Vec<FaultRule>) -> RunningEmulator {
    let mut config = EmulatorConfig {
        api_keys: vec![API_KEY.to_string()],
        faults,
        ..EmulatorConfig::default()
    };
    config.products[0] = Product::new(
        "default",
        Some(MERCHANT_KEY),
        config.products[0].reward_program,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::new(config).serve(listener).await.unwrap()
}

/// The emulator's answer to GetCustomer sent directly with `key`.
async fn emulator_status(emu: &RunningEmulator, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/v2/customers/{JOHN}", emu.url()))
        .header("authorization", basic(key))
        .header("x-imprint-merchant-key", MERCHANT_KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn get_john(ch: &Channel) -> Result<(), tonic::Status> {
    CustomerServiceClient::new(ch.clone())
        .get_customer(req(GetCustomerRequest {
            customer_id: JOHN.into(),
        }))
        .await
        .map(|_| ())
}

async fn rotate(
    ch: &Channel,
) -> Result<imprint_gateway::pb::gateway::v1::RotateCredentialResponse, tonic::Status> {
    KeyManagementServiceClient::new(ch.clone())
        .rotate_credential(admin(RotateCredentialRequest::default()))
        .await
        .map(tonic::Response::into_inner)
}

async fn active_fingerprint(ch: &Channel) -> String {
    let list = KeyManagementServiceClient::new(ch.clone())
        .list_credentials(admin(ListCredentialsRequest {}))
        .await
        .unwrap()
        .into_inner();
    list.data
        .iter()
        .find(|c| c.product == "default" && c.state == CredentialState::Active as i32)
        .map(|c| c.fingerprint.clone())
        .unwrap()
}

fn summary(log: &[Recorded]) -> Vec<(String, String, Option<String>)> {
    log.iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.clone(),
                r.header("authorization").map(str::to_owned),
            )
        })
        .collect()
}

/// The rotated key the data directory holds (no master key: plain JSON).
fn stored_key(dir: &Dir) -> String {
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.0.join("data").join("credentials.json")).unwrap(),
    )
    .unwrap();
    let record: serde_json::Value =
        serde_json::from_str(file["products"]["default"].as_str().unwrap()).unwrap();
    record["api_key"].as_str().unwrap().to_owned()
}

fn script_rotation(up: &FakeUpstream, created: &str) {
    up.on(
        Method::POST,
        "/v2/keys",
        Reply::ok(format!(
            r#"{{"key":"{created}","created_at":"2025-02-13T19:08:07.000Z"}}"#
        )),
    );
    up.on(
        Method::DELETE,
        "/v2/keys",
        Reply::ok(r#"{"key":"echoed","created_at":"2025-02-13T19:08:07.000Z","deleted_at":"2025-02-14T19:08:07.000Z"}"#),
    );
}

/// A rotation to [`CREATED_KEY`], its verification read, and John's
/// record for the calls around it.
fn script_rotation_and_reads(up: &FakeUpstream) {
    script_rotation(up, CREATED_KEY);
    up.on(
        Method::GET,
        "/v2/transaction_intents",
        Reply::ok(r#"{"data":[],"has_more":false,"total":0}"#),
    );
    up.on(
        Method::GET,
        &format!("/v2/customers/{JOHN}"),
        Reply::ok(customer_json()),
    );
}

#[tokio::test]
async fn rotation_creates_verifies_swaps_and_deletes_with_the_right_keys() {
    let up = FakeUpstream::start().await;
    script_rotation_and_reads(&up);
    let dir = Dir::new();
    let gw = gateway(&up.url(), &dir, &[]).await;
    get_john(&gw.channel).await.unwrap();

    let done = rotate(&gw.channel).await.unwrap();
    assert!(done.previous_deleted, "{done:?}");
    assert_eq!(done.previous_fingerprint, fp(API_KEY));
    let cred = done.credential.unwrap();
    assert_eq!(cred.fingerprint, fp(CREATED_KEY));
    assert!(cred.rotated);
    get_john(&gw.channel).await.unwrap();

    let log = up.requests();
    let (old, new) = (basic(API_KEY), basic(CREATED_KEY));
    let seen = summary(&log);
    let customer = format!("/v2/customers/{JOHN}");
    assert_eq!(
        seen,
        vec![
            ("GET".into(), customer.clone(), Some(old.clone())),
            ("POST".into(), "/v2/keys".into(), Some(old.clone())),
            (
                "GET".into(),
                "/v2/transaction_intents".into(),
                Some(new.clone())
            ),
            ("DELETE".into(), "/v2/keys".into(), Some(old.clone())),
            ("GET".into(), customer, Some(new)),
        ]
    );
    // Imprint's key calls carry nothing but the key: no body, no query.
    assert!(log[1].body.is_empty() && log[1].query.is_none());
    assert!(log[3].body.is_empty() && log[3].query.is_none());
    assert_eq!(log[2].query.as_deref(), Some("limit=1"));
    // The merchant key stays the product's.
    assert!(log
        .iter()
        .all(|r| r.header("x-imprint-merchant-key") == Some(MERCHANT_KEY)));
    assert_eq!(active_fingerprint(&gw.channel).await, fp(CREATED_KEY));

    // The audit log has the call and the credential change, by fingerprint.
    let events = AdminServiceClient::new(gw.channel.clone())
        .list_audit_events(admin(ListAuditEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .data;
    let rotated = events
        .iter()
        .find(|e| e.action == "credential.rotate")
        .expect("rotation audited");
    assert_eq!(
        (rotated.actor.as_str(), rotated.outcome.as_str()),
        ("ops", "ok")
    );
    assert!(rotated.detail.contains(&fp(CREATED_KEY)), "{rotated:?}");
    assert!(events.iter().any(|e| e.action
        == "imprint.gateway.v1.KeyManagementService/RotateCredential"
        && e.outcome == "ok"));
}

#[tokio::test]
async fn with_the_cache_on_the_verification_read_reaches_imprint_with_the_new_key() {
    let up = FakeUpstream::start().await;
    script_rotation_and_reads(&up);
    let dir = Dir::new();
    let gw = gateway(&up.url(), &dir, &[("GATEWAY__CACHE__ENABLED", "true")]).await;
    // The very read the rotation verifies with, cached under the old key.
    let read = || async {
        TransactionIntentServiceClient::new(gw.channel.clone())
            .list_transaction_intents(req(ListTransactionIntentsRequest {
                limit: Some(1),
                ..Default::default()
            }))
            .await
            .unwrap()
    };
    read().await;
    let hit = read().await;
    assert_eq!(hit.metadata().get("x-cache").unwrap(), "hit");

    let done = rotate(&gw.channel).await.unwrap();
    assert!(done.previous_deleted, "{done:?}");
    let (old, new) = (basic(API_KEY), basic(CREATED_KEY));
    let seen = summary(&up.requests());
    let list = "/v2/transaction_intents".to_owned();
    assert_eq!(
        seen,
        vec![
            ("GET".into(), list.clone(), Some(old.clone())),
            ("POST".into(), "/v2/keys".into(), Some(old.clone())),
            ("GET".into(), list, Some(new)),
            ("DELETE".into(), "/v2/keys".into(), Some(old)),
        ]
    );
}

#[tokio::test]
async fn key_service_refuses_an_idempotency_key_and_sends_nothing() {
    let up = FakeUpstream::start().await;
    script_rotation_and_reads(&up);
    let dir = Dir::new();
    let gw = gateway(&up.url(), &dir, &[]).await;
    let keyed = |mut r: tonic::Request<DeleteKeyRequest>| {
        r.metadata_mut()
            .insert("idempotency-key", MetadataValue::from_static("same-key-1"));
        r
    };
    for key in ["sk_test_first_to_delete", "sk_test_second_to_delete"] {
        let err = KeyServiceClient::new(gw.channel.clone())
            .delete_key(keyed(admin(DeleteKeyRequest {
                key: Some(key.into()),
                ..Default::default()
            })))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("idempotency-key"), "{err:?}");
    }
    let mut create = admin(CreateKeyRequest {});
    create
        .metadata_mut()
        .insert("idempotency-key", MetadataValue::from_static("same-key-2"));
    let err = KeyServiceClient::new(gw.channel.clone())
        .create_key(create)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
    // Without one, DeleteKey deletes the key it names, with that key.
    KeyServiceClient::new(gw.channel.clone())
        .delete_key(admin(DeleteKeyRequest {
            key: Some("sk_test_second_to_delete".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        summary(&up.requests()),
        vec![(
            "DELETE".into(),
            "/v2/keys".into(),
            Some(basic("sk_test_second_to_delete"))
        )]
    );
}

#[tokio::test]
async fn a_failed_verification_deletes_the_new_key_and_keeps_the_old_one() {
    let up = FakeUpstream::start().await;
    script_rotation(&up, CREATED_KEY);
    up.on(
        Method::GET,
        "/v2/transaction_intents",
        Reply::json(
            401,
            r#"{"error":{"type":"unauthorized","message":"bad key"}}"#,
        ),
    );
    up.on(
        Method::GET,
        &format!("/v2/customers/{JOHN}"),
        Reply::ok(customer_json()),
    );
    let dir = Dir::new();
    let gw = gateway(&up.url(), &dir, &[]).await;
    let err = rotate(&gw.channel).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("the new key was deleted"), "{err:?}");
    assert!(err.message().contains("stays active"), "{err:?}");
    get_john(&gw.channel).await.unwrap();

    let (old, new) = (basic(API_KEY), basic(CREATED_KEY));
    let seen = summary(&up.requests());
    assert_eq!(
        seen[0],
        ("POST".into(), "/v2/keys".into(), Some(old.clone()))
    );
    assert_eq!(seen[1].2, Some(new.clone()));
    // The new key deletes itself; the old one is untouched and in use.
    assert_eq!(seen[2], ("DELETE".into(), "/v2/keys".into(), Some(new)));
    assert_eq!(seen[3].2, Some(old));
    assert_eq!(seen.len(), 4);
    assert_eq!(active_fingerprint(&gw.channel).await, fp(API_KEY));
    assert!(!dir.0.join("data").join("credentials.json").exists());
    let failed = AdminServiceClient::new(gw.channel.clone())
        .list_audit_events(admin(ListAuditEventsRequest {
            action: Some("credential.rotate".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .data;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome, "failed");
}

#[tokio::test]
async fn a_failed_final_delete_leaves_both_keys_valid_and_is_retried() {
    let up = FakeUpstream::start().await;
    up.on(
        Method::POST,
        "/v2/keys",
        Reply::ok(format!(
            r#"{{"key":"{CREATED_KEY}","created_at":"2025-02-13T19:08:07.000Z"}}"#
        )),
    );
    up.on(
        Method::GET,
        "/v2/transaction_intents",
        Reply::ok(r#"{"data":[],"has_more":false,"total":0}"#),
    );
    // The first DELETE (and its retries) fail; a later one succeeds.
    for _ in 0..3 {
        up.on(
            Method::DELETE,
            "/v2/keys",
            Reply::json(500, r#"{"error":{"type":"api_error","message":"boom"}}"#),
        );
    }
    up.on(Method::DELETE, "/v2/keys", Reply::ok(r#"{"key":"x"}"#));
    let dir = Dir::new();
    let gw = gateway(
        &up.url(),
        &dir,
        &[
            ("GATEWAY__CREDENTIALS__RETRY_INTERVAL", "1s"),
            ("GATEWAY__CREDENTIALS__SYNC_INTERVAL", "200ms"),
            ("GATEWAY__RETRY__MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let done = rotate(&gw.channel).await.unwrap();
    assert!(!done.previous_deleted);
    assert!(done.warning.contains("retried"), "{done:?}");
    let list = || async {
        KeyManagementServiceClient::new(gw.channel.clone())
            .list_credentials(admin(ListCredentialsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .data
    };
    let retiring = list().await;
    assert!(retiring
        .iter()
        .any(|c| c.state == CredentialState::Retiring as i32 && c.fingerprint == fp(API_KEY)));
    // Retried in the background until the old key is gone.
    let mut gone = false;
    for _ in 0..100 {
        if !list()
            .await
            .iter()
            .any(|c| c.state == CredentialState::Retiring as i32)
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the retiring key was never deleted");
    let deletes: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .collect();
    assert!(deletes.len() >= 2);
    assert!(deletes
        .iter()
        .all(|r| r.header("authorization") == Some(basic(API_KEY).as_str())));
}

#[tokio::test]
async fn an_abandoned_rotation_whose_cleanup_fails_keeps_the_new_key_as_retiring() {
    let up = FakeUpstream::start().await;
    up.on(
        Method::POST,
        "/v2/keys",
        Reply::ok(format!(r#"{{"key":"{CREATED_KEY}"}}"#)),
    );
    // The verification read fails (not a refusal of the key) and so does
    // the first DELETE of the new key; a later one succeeds.
    up.on(
        Method::GET,
        "/v2/transaction_intents",
        Reply::json(500, r#"{"error":{"type":"api_error","message":"boom"}}"#),
    );
    up.on(
        Method::DELETE,
        "/v2/keys",
        Reply::json(500, r#"{"error":{"type":"api_error","message":"boom"}}"#),
    );
    up.on(Method::DELETE, "/v2/keys", Reply::ok(r#"{"key":"x"}"#));
    let dir = Dir::new();
    let gw = gateway(
        &up.url(),
        &dir,
        &[
            ("GATEWAY__CREDENTIALS__RETRY_INTERVAL", "1s"),
            ("GATEWAY__CREDENTIALS__SYNC_INTERVAL", "200ms"),
            ("GATEWAY__RETRY__MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let err = rotate(&gw.channel).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("kept as retiring"), "{err:?}");
    assert!(err.message().contains("stays active"), "{err:?}");
    let list = || async {
        KeyManagementServiceClient::new(gw.channel.clone())
            .list_credentials(admin(ListCredentialsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .data
    };
    let listed = list().await;
    assert!(
        listed.iter().any(
            |c| c.state == CredentialState::Retiring as i32 && c.fingerprint == fp(CREATED_KEY)
        ),
        "{listed:?}"
    );
    assert_eq!(active_fingerprint(&gw.channel).await, fp(API_KEY));
    // Retried in the background, with the new key itself, until gone.
    let mut gone = false;
    for _ in 0..100 {
        if !list()
            .await
            .iter()
            .any(|c| c.state == CredentialState::Retiring as i32)
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the new key was never deleted");
    let deletes: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .collect();
    assert_eq!(deletes.len(), 2);
    assert!(deletes
        .iter()
        .all(|r| r.header("authorization") == Some(basic(CREATED_KEY).as_str())));
    only_the_create_used_the_old_key(&up);
}

/// Nothing was sent with the old key but the POST that made the new one.
fn only_the_create_used_the_old_key(up: &FakeUpstream) {
    let old = basic(API_KEY);
    let with_old: Vec<_> = summary(&up.requests())
        .into_iter()
        .filter(|(_, _, a)| a.as_deref() == Some(old.as_str()))
        .collect();
    assert_eq!(
        with_old,
        vec![("POST".into(), "/v2/keys".into(), Some(old.clone()))]
    );
}

#[tokio::test]
async fn a_rotation_whose_caller_gave_up_finishes_and_the_next_one_runs() {
    const SECOND_KEY: &str = "sk_test_created_by_rotation_2";
    let up = FakeUpstream::start().await;
    for key in [CREATED_KEY, SECOND_KEY] {
        up.on(
            Method::POST,
            "/v2/keys",
            Reply::ok(format!(r#"{{"key":"{key}"}}"#)),
        );
    }
    let empty = r#"{"data":[],"has_more":false,"total":0}"#;
    // The first verification read outlasts the caller's deadline.
    up.on(
        Method::GET,
        "/v2/transaction_intents",
        Reply::ok(empty).delay(Duration::from_millis(1500)),
    );
    up.on(Method::GET, "/v2/transaction_intents", Reply::ok(empty));
    up.on(Method::DELETE, "/v2/keys", Reply::ok(r#"{"key":"x"}"#));
    let dir = Dir::new();
    let gw = gateway(&up.url(), &dir, &[]).await;
    let mut hurried = admin(RotateCredentialRequest::default());
    hurried.set_timeout(Duration::from_millis(500));
    let err = KeyManagementServiceClient::new(gw.channel.clone())
        .rotate_credential(hurried)
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // The first rotation finishes on its own; the next one is not locked out.
    let mut second = None;
    for _ in 0..100 {
        match rotate(&gw.channel).await {
            Ok(r) => {
                second = Some(r);
                break;
            }
            Err(s) if s.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    let second = second.expect("the rotation lock was never released");
    assert_eq!(second.previous_fingerprint, fp(CREATED_KEY));
    assert_eq!(second.credential.unwrap().fingerprint, fp(SECOND_KEY));
    assert!(second.previous_deleted);
    let deletes: Vec<_> = summary(&up.requests())
        .into_iter()
        .filter(|(m, _, _)| m == "DELETE")
        .map(|(_, _, a)| a)
        .collect();
    assert_eq!(
        deletes,
        vec![Some(basic(API_KEY)), Some(basic(CREATED_KEY))]
    );
    assert_eq!(active_fingerprint(&gw.channel).await, fp(SECOND_KEY));
}

#[tokio::test]
async fn with_redis_but_no_master_key_rotation_is_refused_before_any_upstream_call() {
    let up = FakeUpstream::start().await;
    script_rotation_and_reads(&up);
    let redis = RedisServer::start();
    let dir = Dir::new();
    let gw = gateway(
        &up.url(),
        &dir,
        &[("GATEWAY_REDIS_URL", redis.url.as_str())],
    )
    .await;
    let err = rotate(&gw.channel).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("GATEWAY_MASTER_KEY_FILE"), "{err:?}");
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
    assert_eq!(active_fingerprint(&gw.channel).await, fp(API_KEY));
    get_john(&gw.channel).await.unwrap();
}

#[tokio::test]
async fn against_the_emulator_200_concurrent_calls_survive_a_rotation_and_the_old_key_dies() {
    // Slow reads: calls sent with the old key are still in flight at the
    // swap; the rotation waits for them before deleting the old key.
    let emu = emulator_with(vec![FaultRule::latency(
        "/v2/customers",
        Duration::from_millis(100),
    )])
    .await;
    let dir = Dir::new();
    let gw = gateway(&emu.url(), &dir, &[]).await;
    get_john(&gw.channel).await.unwrap();
    let ch = gw.channel.clone();
    let load = tokio::spawn(async move {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let ch = ch.clone();
            calls.spawn(async move { get_john(&ch).await });
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut failures = Vec::new();
        while let Some(r) = calls.join_next().await {
            if let Err(e) = r.unwrap() {
                failures.push(e);
            }
        }
        failures
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let done = rotate(&gw.channel).await.unwrap();
    assert!(done.previous_deleted, "{done:?}");
    let failures = tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .unwrap()
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} calls failed: {:?}",
        failures.len(),
        failures.first()
    );
    get_john(&gw.channel).await.unwrap();
    // Imprint (the emulator) refuses the old key, takes the new one.
    let new_key = stored_key(&dir);
    assert_eq!(fp(&new_key), done.credential.unwrap().fingerprint);
    assert_eq!(emulator_status(&emu, API_KEY).await, 401);
    assert_eq!(emulator_status(&emu, &new_key).await, 200);
}

#[tokio::test]
async fn a_restart_uses_the_rotated_key_and_the_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let emu = emulator().await;
    let dir = Dir::new();
    let callers = callers_file(&dir);
    let data = dir.0.join("data").display().to_string();
    let env = [
        ("GATEWAY_CALLER_TOKENS_FILE", callers.as_str()),
        ("GATEWAY_DATA_DIR", data.as_str()),
    ];
    let first = GatewayProcess::spawn(&emu.url(), &env).await;
    rotate(&first.channel).await.unwrap();
    drop(first);
    let file = dir.0.join("data").join("credentials.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(emulator_status(&emu, API_KEY).await, 401);
    // Same configuration (the old, deleted key), same data directory.
    let second = GatewayProcess::spawn(&emu.url(), &env).await;
    get_john(&second.channel).await.unwrap();
    assert_eq!(
        active_fingerprint(&second.channel).await,
        fp(&stored_key(&dir))
    );
}

#[tokio::test]
async fn two_gateways_sharing_redis_both_switch_to_the_rotated_key() {
    let emu = emulator().await;
    let redis = RedisServer::start();
    let dir = Dir::new();
    let callers = callers_file(&dir);
    let master = dir.0.join("master.key");
    std::fs::write(&master, MASTER_KEY_HEX).unwrap();
    let master = master.display().to_string();
    let (data_a, data_b) = (
        dir.0.join("a").display().to_string(),
        dir.0.join("b").display().to_string(),
    );
    let common = |data: &str| {
        vec![
            ("GATEWAY_CALLER_TOKENS_FILE".to_string(), callers.clone()),
            ("GATEWAY_REDIS_URL".to_string(), redis.url.clone()),
            ("GATEWAY_MASTER_KEY_FILE".to_string(), master.clone()),
            ("GATEWAY_DATA_DIR".to_string(), data.to_string()),
            (
                "GATEWAY__CREDENTIALS__SYNC_INTERVAL".to_string(),
                "300ms".to_string(),
            ),
        ]
    };
    let env_a = common(&data_a);
    let env_b = common(&data_b);

    let a = GatewayProcess::spawn(&emu.url(), &borrow(&env_a)).await;
    let b = GatewayProcess::spawn(&emu.url(), &borrow(&env_b)).await;
    get_john(&b.channel).await.unwrap();
    let done = rotate(&a.channel).await.unwrap();
    assert!(done.previous_deleted);
    let new_fp = done.credential.unwrap().fingerprint;
    // B follows within seconds (bounded poll); the old key is gone upstream,
    // so B's calls succeeding means B uses the new key.
    let mut switched = false;
    for _ in 0..50 {
        if active_fingerprint(&b.channel).await == new_fp {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "replica B never switched");
    assert_eq!(emulator_status(&emu, API_KEY).await, 401);
    get_john(&b.channel).await.unwrap();
    get_john(&a.channel).await.unwrap();
    // What Redis holds is sealed: no key in the clear.
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let held: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("imprint-gateway:credentials")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(held.contains_key("default"), "{held:?}");
    assert!(held.values().all(|v| !v.contains("sk_")), "{held:?}");
}

#[tokio::test]
async fn admin_services_refuse_other_callers_and_the_audit_log_records_both() {
    let up = FakeUpstream::start().await;
    let dir = Dir::new();
    let gw = gateway(&up.url(), &dir, &[]).await;
    let ch = gw.channel.clone();
    let denied = [
        KeyServiceClient::new(ch.clone())
            .create_key(req(CreateKeyRequest {}))
            .await
            .unwrap_err(),
        KeyServiceClient::new(ch.clone())
            .delete_key(req(DeleteKeyRequest {
                credential_id: Some("cred_x".into()),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
        KeyManagementServiceClient::new(ch.clone())
            .list_credentials(req(ListCredentialsRequest {}))
            .await
            .unwrap_err(),
        KeyManagementServiceClient::new(ch.clone())
            .rotate_credential(req(RotateCredentialRequest::default()))
            .await
            .unwrap_err(),
        AdminServiceClient::new(ch.clone())
            .list_audit_events(req(ListAuditEventsRequest::default()))
            .await
            .unwrap_err(),
    ];
    for status in &denied {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    assert!(up.requests().is_empty());
    // The admin is let in.
    KeyManagementServiceClient::new(ch.clone())
        .list_credentials(admin(ListCredentialsRequest {}))
        .await
        .unwrap();
    let client = || AdminServiceClient::new(ch.clone());
    let refused = client()
        .list_audit_events(admin(ListAuditEventsRequest {
            outcome: Some("denied".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .data;
    assert_eq!(refused.len(), 5, "{refused:#?}");
    assert!(refused.iter().all(|e| e.actor == "tester"));
    assert!(refused
        .iter()
        .any(|e| e.action == "imprint.v2.KeyService/CreateKey"));
    let allowed = client()
        .list_audit_events(admin(ListAuditEventsRequest {
            actor: Some("ops".into()),
            action: Some("imprint.gateway.v1.KeyManagementService/ListCredentials".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .data;
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0].outcome, "ok");
    // Paging: one at a time, newest first, no repeats.
    let first = client()
        .list_audit_events(admin(ListAuditEventsRequest {
            limit: Some(1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(first.has_more);
    let second = client()
        .list_audit_events(admin(ListAuditEventsRequest {
            limit: Some(1),
            cursor: Some(first.next_cursor.clone()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(second.data[0].sequence < first.data[0].sequence);
}

/// Two products: each call carries its own product's key and merchant key;
/// a caller not allowed a product is refused before the upstream.
#[tokio::test]
async fn products_are_picked_per_call_within_the_callers_policy() {
    let up = FakeUpstream::start().await;
    up.on(
        Method::GET,
        &format!("/v2/customers/{JOHN}"),
        Reply::ok(customer_json()),
    );
    let dir = Dir::new();
    let gw = gateway_with_cobrand(&up.url(), &dir, &[("GATEWAY__CACHE__ENABLED", "true")]).await;
    let ch = gw.channel.clone();
    let get = |token: &'static str, product: Option<&'static str>| {
        let ch = ch.clone();
        async move {
            let mut r = with_token(
                GetCustomerRequest {
                    customer_id: JOHN.into(),
                },
                token,
            );
            if let Some(p) = product {
                r = with_product(r, p);
            }
            CustomerServiceClient::new(ch).get_customer(r).await
        }
    };
    get(ADMIN_TOKEN, None).await.unwrap();
    get(ADMIN_TOKEN, Some("cobrand-b")).await.unwrap();
    // Cached per product: a second read of each is a hit.
    get(ADMIN_TOKEN, None).await.unwrap();
    let hit = get(ADMIN_TOKEN, Some("cobrand-b")).await.unwrap();
    assert_eq!(hit.metadata().get("x-cache").unwrap(), "hit");
    get(COBRAND_TOKEN, Some("cobrand-b")).await.unwrap();
    let log = up.requests();
    assert_eq!(log.len(), 2, "{:#?}", summary(&log));
    assert_eq!(
        log[0].header("authorization"),
        Some(basic(API_KEY).as_str())
    );
    assert_eq!(log[0].header("x-imprint-merchant-key"), Some(MERCHANT_KEY));
    assert_eq!(
        log[1].header("authorization"),
        Some(basic(COBRAND_KEY).as_str())
    );
    assert_eq!(
        log[1].header("x-imprint-merchant-key"),
        Some(COBRAND_MERCHANT)
    );

    // Not allowed: refused before the upstream.
    let no = get(crate::harness::TOKEN, Some("cobrand-b"))
        .await
        .unwrap_err();
    assert_eq!(no.code(), Code::PermissionDenied, "{no:?}");
    let no = get(COBRAND_TOKEN, None).await.unwrap_err();
    assert_eq!(no.code(), Code::PermissionDenied, "{no:?}");
    // Unknown: INVALID_ARGUMENT naming the metadata key, not its value.
    let unknown = get(ADMIN_TOKEN, Some("sk_live_pasted_by_mistake"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("x-imprint-product"),
        "{unknown:?}"
    );
    assert!(!format!("{unknown:?}").contains("pasted_by_mistake"));
    assert_eq!(up.requests().len(), 2);

    // Listed by fingerprint, never by key.
    let list = KeyManagementServiceClient::new(ch.clone())
        .list_credentials(admin(ListCredentialsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let cobrand = list.data.iter().find(|c| c.product == "cobrand-b").unwrap();
    assert_eq!(cobrand.fingerprint, fp(COBRAND_KEY));
    assert_eq!(cobrand.merchant_key_fingerprint, fp(COBRAND_MERCHANT));
    assert!(!format!("{list:?}").contains(COBRAND_KEY));
}

#[tokio::test]
async fn create_and_delete_key_follow_the_gateway_policy() {
    let up = FakeUpstream::start().await;
    script_rotation(&up, CREATED_KEY);
    let dir = Dir::new();
    let gw = gateway(&up.url(), &dir, &[]).await;
    let mut keys = KeyServiceClient::new(gw.channel.clone());
    let created = keys
        .create_key(admin(CreateKeyRequest {}))
        .await
        .unwrap()
        .into_inner();
    // The secret goes to the admin caller, once, with its fingerprint.
    assert_eq!(created.key, CREATED_KEY);
    assert_eq!(created.fingerprint, fp(CREATED_KEY));
    assert!(!format!("{created:?}").contains(CREATED_KEY));

    // The credential in use is refused unless forced, before the upstream.
    let in_use = keys
        .delete_key(admin(DeleteKeyRequest {
            key: Some(API_KEY.into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition, "{in_use:?}");
    assert!(!in_use.message().contains(API_KEY));
    let by_id = keys
        .delete_key(admin(DeleteKeyRequest {
            credential_id: Some(format!(
                "cred_{}",
                fp(API_KEY).trim_start_matches("sha256:")
            )),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(by_id.code(), Code::FailedPrecondition);
    assert_eq!(up.requests().len(), 1);

    // Deleting the created key: DELETE authenticated with it, nothing else.
    let deleted = keys
        .delete_key(admin(DeleteKeyRequest {
            key: Some(CREATED_KEY.into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.key.is_empty(), "the echoed key goes nowhere");
    assert_eq!(deleted.fingerprint, fp(CREATED_KEY));
    let log = up.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, Method::POST);
    assert_eq!(
        log[0].header("authorization"),
        Some(basic(API_KEY).as_str())
    );
    assert!(log[0].body.is_empty());
    assert_eq!(log[1].method, Method::DELETE);
    assert_eq!(log[1].path, "/v2/keys");
    assert!(log[1].query.is_none());
    assert_eq!(
        log[1].header("authorization"),
        Some(basic(CREATED_KEY).as_str())
    );

    // Forced: the key in use goes too.
    keys.delete_key(admin(DeleteKeyRequest {
        key: Some(API_KEY.into()),
        force: Some(true),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(up.requests().len(), 3);
}

/// Nothing the key machinery produces holds a key: the logs of a real
/// process at trace level, the request log, the audit log, the listings,
/// the statuses and the data directory (sealed under the master key).
#[tokio::test]
async fn no_key_secret_in_any_output_of_key_management() {
    use crate::secrets_scan::assert_clean;
    let up = FakeUpstream::start().await;
    script_rotation_and_reads(&up);
    let dir = Dir::new();
    let callers = callers_file(&dir);
    let master = dir.0.join("master.key");
    std::fs::write(&master, MASTER_KEY_HEX).unwrap();
    let cobrand = dir.0.join("cobrand.key");
    std::fs::write(&cobrand, COBRAND_KEY).unwrap();
    let config = dir.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[[credentials.products]]\nname = \"cobrand-b\"\napi_key_file = \"{}\"\nmerchant_key_env = \"COBRAND_MERCHANT\"\n",
            cobrand.display()
        ),
    )
    .unwrap();
    let log_path = dir.0.join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("IMPRINT_API_BASE_URL", up.url())
        .env("IMPRINT_API_KEY", API_KEY)
        .env("IMPRINT_MERCHANT_KEY", MERCHANT_KEY)
        .env("COBRAND_MERCHANT", COBRAND_MERCHANT)
        .env("GATEWAY_CALLER_TOKENS_FILE", &callers)
        .env("GATEWAY_MASTER_KEY_FILE", &master)
        .env("GATEWAY_DATA_DIR", dir.0.join("data"))
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("GATEWAY_LOG_FORMAT", "json")
        .env("GATEWAY__CACHE__ENABLED", "false")
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let (grpc, http) = crate::harness::listening_in(&log_path).await;
    let (grpc, http) = (grpc.port(), http.port());
    let mut channel = None;
    for _ in 0..200 {
        match Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => {
                channel = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let ch = channel.expect("the gateway listens");
    let mut outputs = String::new();
    let created = KeyServiceClient::new(ch.clone())
        .create_key(admin(CreateKeyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.key, CREATED_KEY, "the admin caller gets it");
    outputs.push_str(&format!("{created:?}\n"));
    outputs.push_str(&format!("{:?}\n", rotate(&ch).await.unwrap()));
    let status = KeyServiceClient::new(ch.clone())
        .delete_key(admin(DeleteKeyRequest {
            key: Some(CREATED_KEY.into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    outputs.push_str(&format!("{status:?}\n"));
    CustomerServiceClient::new(ch.clone())
        .get_customer(with_product(
            admin(GetCustomerRequest {
                customer_id: JOHN.into(),
            }),
            "cobrand-b",
        ))
        .await
        .unwrap();
    outputs.push_str(&format!(
        "{:?}\n",
        KeyManagementServiceClient::new(ch.clone())
            .list_credentials(admin(ListCredentialsRequest {}))
            .await
            .unwrap()
    ));
    outputs.push_str(&format!(
        "{:?}\n",
        AdminServiceClient::new(ch.clone())
            .list_audit_events(admin(ListAuditEventsRequest::default()))
            .await
            .unwrap()
    ));
    outputs.push_str(&format!(
        "{:?}\n",
        AdminServiceClient::new(ch.clone())
            .list_upstream_calls(admin(
                imprint_gateway::pb::gateway::v1::ListUpstreamCallsRequest::default()
            ))
            .await
            .unwrap()
    ));
    let metrics = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("imprint_gateway::audit"),
        "audit lines are logged"
    );
    let stored = std::fs::read_to_string(dir.0.join("data").join("credentials.json")).unwrap();
    assert_clean(&[
        ("logs at trace level", &logs),
        ("statuses, listings, audit and request log", &outputs),
        ("GET /metrics", &metrics),
        ("data directory (sealed)", &stored),
    ]);
    let _ = Path::new(&log_path);
}

fn borrow(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `imprint-gateway rotate-key` next to a running gateway on the same data
/// directory: the gateway switches before the old key is deleted.
#[tokio::test]
async fn the_rotate_key_command_is_picked_up_by_a_running_gateway() {
    let emu = emulator().await;
    let dir = Dir::new();
    let callers = callers_file(&dir);
    let data = dir.0.join("data").display().to_string();
    let env = [
        ("GATEWAY_CALLER_TOKENS_FILE", callers.as_str()),
        ("GATEWAY_DATA_DIR", data.as_str()),
        ("GATEWAY__CREDENTIALS__SYNC_INTERVAL", "200ms"),
    ];
    let running = GatewayProcess::spawn(&emu.url(), &env).await;
    get_john(&running.channel).await.unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"));
    cmd.arg("rotate-key")
        .env("IMPRINT_API_BASE_URL", emu.url())
        .env("IMPRINT_API_KEY", API_KEY)
        .env("IMPRINT_MERCHANT_KEY", MERCHANT_KEY)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_key = stored_key(&dir);
    assert!(
        stdout.contains(&format!("now {}", fp(&new_key))) && stdout.contains("deleted"),
        "{stdout}"
    );
    assert!(!stdout.contains(&new_key) && !stdout.contains(API_KEY));
    assert_eq!(emulator_status(&emu, API_KEY).await, 401);
    // The running gateway switched: its calls work without the old key.
    get_john(&running.channel).await.unwrap();
    assert_eq!(active_fingerprint(&running.channel).await, fp(&new_key));
}

/// SIGHUP (`Running::reload`) after a rotation: the same configured key
/// leaves the rotated key in use; a new key in the file replaces it.
#[tokio::test]
async fn a_reload_keeps_a_rotated_key_unless_the_configured_key_changed() {
    let up = FakeUpstream::start().await;
    script_rotation_and_reads(&up);
    let dir = Dir::new();
    let key_file = dir.0.join("api-key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    let key_file = key_file.display().to_string();
    let gw = gateway(
        &up.url(),
        &dir,
        &[
            ("IMPRINT_API_KEY", ""),
            ("IMPRINT_API_KEY_FILE", key_file.as_str()),
        ],
    )
    .await;
    rotate(&gw.channel).await.unwrap();
    let running = gw.running.as_ref().unwrap();
    running.reload().unwrap();
    get_john(&gw.channel).await.unwrap();
    let last = |up: &FakeUpstream| {
        up.requests()
            .last()
            .and_then(|r| r.header("authorization").map(str::to_owned))
    };
    assert_eq!(last(&up), Some(basic(CREATED_KEY)));
    const RECOVERED: &str = "sk_test_recovered_by_operator";
    std::fs::write(dir.0.join("api-key"), RECOVERED).unwrap();
    running.reload().unwrap();
    get_john(&gw.channel).await.unwrap();
    assert_eq!(last(&up), Some(basic(RECOVERED)));
}

/// The same caller and idempotency key for two products are two calls: the
/// records are scoped by product, so neither replays the other's answer.
#[tokio::test]
async fn idempotency_records_are_scoped_by_product() {
    use imprint_gateway::pb::imprint::v2::{
        transaction_intent_service_client::TransactionIntentServiceClient,
        CreateTransactionIntentRequest,
    };
    let up = FakeUpstream::start().await;
    up.on(
        Method::POST,
        "/v2/transaction_intents",
        Reply::ok(crate::fixtures::intent_json()),
    );
    let dir = Dir::new();
    let gw = gateway(
        &up.url(),
        &dir,
        &[
            (
                "GATEWAY__CREDENTIALS__PRODUCTS",
                r#"[{ name = "cobrand-b", api_key_env = "COBRAND_KEY_VAR" }]"#,
            ),
            ("COBRAND_KEY_VAR", COBRAND_KEY),
        ],
    )
    .await;
    let create = |product: Option<&'static str>| {
        let ch = gw.channel.clone();
        async move {
            let mut r = admin(CreateTransactionIntentRequest {
                customer_id: JOHN.into(),
                amount: Some(500),
                currency: "USD".into(),
                ..Default::default()
            });
            r.metadata_mut()
                .insert("idempotency-key", MetadataValue::from_static("same-key-1"));
            if let Some(p) = product {
                r = with_product(r, p);
            }
            TransactionIntentServiceClient::new(ch)
                .create_transaction_intent(r)
                .await
                .unwrap()
        }
    };
    create(None).await;
    let replay = create(None).await;
    assert_eq!(
        replay.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );
    let other = create(Some("cobrand-b")).await;
    assert!(other.metadata().get("idempotent-replayed").is_none());
    let log = up.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[1].header("authorization"),
        Some(basic(COBRAND_KEY).as_str())
    );
}

/// KeyService is held to `server.max_message_bytes` like the proxied
/// services: an oversized DeleteKey is refused before the upstream.
#[tokio::test]
async fn key_service_calls_are_held_to_the_message_size_limit() {
    let up = FakeUpstream::start().await;
    let dir = Dir::new();
    let gw = gateway(
        &up.url(),
        &dir,
        &[("GATEWAY__SERVER__MAX_MESSAGE_BYTES", "1024")],
    )
    .await;
    let big = "k".repeat(4096);
    let s = KeyServiceClient::new(gw.channel.clone())
        .delete_key(admin(DeleteKeyRequest {
            key: Some(big.clone()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{}", s.code());
    assert!(s.message().contains("1024"), "{}", s.message());
    assert!(!s.message().contains(&big));
    assert!(up.requests().is_empty());
    // A small call still passes.
    KeyManagementServiceClient::new(gw.channel.clone())
        .list_credentials(admin(ListCredentialsRequest {}))
        .await
        .unwrap();
}

/// ListCredentials lists only the products the admin caller may use.
#[tokio::test]
async fn list_credentials_shows_only_the_callers_products() {
    let up = FakeUpstream::start().await;
    let dir = Dir::new();
    let gw = gateway_with_cobrand(&up.url(), &dir, &[]).await;
    let list = |token: &'static str| {
        let ch = gw.channel.clone();
        async move {
            let mut products: Vec<String> = KeyManagementServiceClient::new(ch)
                .list_credentials(with_token(ListCredentialsRequest {}, token))
                .await
                .unwrap()
                .into_inner()
                .data
                .into_iter()
                .map(|c| c.product)
                .collect();
            products.sort();
            products
        }
    };
    assert_eq!(list(ADMIN_TOKEN).await, ["cobrand-b", "default"]);
    assert_eq!(list("caller-token-keys-admin-cobrand").await, ["cobrand-b"]);
    assert!(up.requests().is_empty());
}

/// DeleteKey refuses a key another product is using, whichever product the
/// call selects, before the upstream.
#[tokio::test]
async fn delete_key_refuses_a_key_in_use_by_any_product() {
    let up = FakeUpstream::start().await;
    let dir = Dir::new();
    let gw = gateway_with_cobrand(&up.url(), &dir, &[]).await;
    let mut keys = KeyServiceClient::new(gw.channel.clone());
    // Selected product: default; the key is cobrand-b's.
    let s = keys
        .delete_key(admin(DeleteKeyRequest {
            key: Some(COBRAND_KEY.into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("'cobrand-b'"), "{}", s.message());
    assert!(!s.message().contains(COBRAND_KEY));
    // And the other way round.
    let s = keys
        .delete_key(with_product(
            admin(DeleteKeyRequest {
                key: Some(API_KEY.into()),
                ..Default::default()
            }),
            "cobrand-b",
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("'default'"), "{}", s.message());
    assert!(up.requests().is_empty());
}
