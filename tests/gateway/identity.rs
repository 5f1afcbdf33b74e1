//! Transport security and caller identity (#12): TLS and mTLS on the gRPC
//! listener with certificates generated at run time (rcgen), callers named
//! by their certificate's SPIFFE ID or DNS SAN and held to their policy,
//! certificate reload (file watch and SIGHUP), PCI fields only for PCI
//! callers, per-caller rate limits from the policy file.

use std::{net::SocketAddr, path::Path, time::Duration};

use axum::http::Method;
use imprint_gateway::{
    config::Config,
    pb::imprint::{
        gateway::v1::{
            admin_service_client::AdminServiceClient,
            key_management_service_client::KeyManagementServiceClient, ListAuditEventsRequest,
            ListCredentialsRequest, ListUpstreamCallsRequest,
        },
        v2::{
            customer_service_client::CustomerServiceClient,
            payment_method_service_client::PaymentMethodServiceClient, GetCustomerRequest,
            GetPaymentMethodRequest, ListPaymentMethodsRequest,
        },
    },
    server,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{
    fixtures::*,
    harness::{tempdir::Dir, with_token, FakeUpstream, Reply, TestGateway, API_KEY, MERCHANT_KEY},
    keys::COBRAND_KEY,
    secrets_scan,
};

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// The gateway's certificate: `localhost` and 127.0.0.1.
    fn server(&self) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(params)
    }

    /// A client certificate with these SANs.
    fn client(&self, sans: Vec<SanType>) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, "client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(params)
    }

    fn leaf(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn spiffe(id: &str) -> SanType {
    SanType::URI(id.try_into().unwrap())
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

/// The gateway in front of `upstream`, its files in `dir`, `env` over
/// the defaults.
async fn start(
    upstream: &str,
    dir: &Path,
    policy: &str,
    env: &[(&str, String)],
) -> server::Running {
    let callers = dir.join("callers.toml");
    std::fs::write(&callers, policy).unwrap();
    let mut vars: Vec<(String, String)> = vec![
        ("IMPRINT_API_BASE_URL".into(), upstream.into()),
        ("IMPRINT_API_KEY".into(), API_KEY.into()),
        ("IMPRINT_MERCHANT_KEY".into(), MERCHANT_KEY.into()),
        (
            "GATEWAY_CALLER_TOKENS_FILE".into(),
            callers.display().to_string(),
        ),
        ("GATEWAY__CACHE__ENABLED".into(), "false".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let config = Config::load_with_env(None, vars).expect("test config");
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::start(config, grpc, http)
        .await
        .expect("gateway starts")
}

/// Writes the server's certificate and key (and the client CA) into `dir`
/// and returns the TLS settings naming them.
fn tls_env(dir: &Path, server: &Leaf, client_ca: Option<&Ca>) -> Vec<(&'static str, String)> {
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    write_atomically(&cert, &server.cert);
    write_atomically(&key, &server.key);
    let mut env = vec![
        ("GATEWAY_TLS_CERT_FILE", cert.display().to_string()),
        ("GATEWAY_TLS_KEY_FILE", key.display().to_string()),
    ];
    if let Some(ca) = client_ca {
        let path = dir.join("client-ca.pem");
        std::fs::write(&path, &ca.pem).unwrap();
        env.push(("GATEWAY_TLS_CLIENT_CA_FILE", path.display().to_string()));
    }
    env
}

/// How operators replace certificates: write beside, rename over.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TLS channel to `addr` trusting `ca`, presenting `identity` if given.
async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn get_pm() -> tonic::Request<GetPaymentMethodRequest> {
    tonic::Request::new(GetPaymentMethodRequest {
        payment_method_id: "PM1".into(),
    })
}

fn get_customer() -> tonic::Request<GetCustomerRequest> {
    tonic::Request::new(GetCustomerRequest {
        customer_id: "C1".into(),
    })
}

fn count(up: &FakeUpstream, path: &str) -> usize {
    up.requests().iter().filter(|r| r.path == path).count()
}

const MTLS_POLICY: &str = r#"
[[callers]]
name = "vault"
spiffe_id = "spiffe://test.internal/vault"
allow = ["imprint.v2.PaymentMethodService/*"]
pci = true

[[callers]]
name = "ledger"
dns_san = "ledger.test.internal"
allow = ["imprint.v2.CustomerService/GetCustomer"]

[[callers]]
name = "token-caller"
token = "caller-token-mtls"
allow = ["imprint.v2.CustomerService/*"]
"#;

#[tokio::test]
async fn mtls_names_callers_by_their_certificate_and_holds_them_to_their_policy() {
    let up = FakeUpstream::start().await;
    up.on(
        Method::GET,
        "/v2/payment_methods/PM1",
        Reply::ok(card_payment_method_json()),
    );
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let dir = Dir::new();
    let ca = Ca::new("gateway test CA");
    let clients = Ca::new("client CA");
    let mut env = tls_env(&dir.0, &ca.server(), Some(&clients));
    // Certificates optional: callers without one may use tokens.
    env.push(("GATEWAY__SERVER__TLS_CLIENT_CERT_REQUIRED", "false".into()));
    let gw = start(&up.url(), &dir.0, MTLS_POLICY, &env).await;
    let addr = gw.grpc_addr();
    const PM: &str = "/v2/payment_methods/PM1";
    const CUSTOMER: &str = "/v2/customers/C1";

    // SPIFFE ID: the vault may read payment methods (PCI data included)...
    let vault = clients.client(vec![spiffe("spiffe://test.internal/vault")]);
    let ch = tls_channel(addr, &ca.pem, Some(&vault)).await.unwrap();
    let pm = PaymentMethodServiceClient::new(ch.clone())
        .get_payment_method(get_pm())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pm, card_payment_method());
    assert_eq!(count(&up, PM), 1);
    // ...and nothing else: refused before Imprint.
    let refused = CustomerServiceClient::new(ch)
        .get_customer(get_customer())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("vault"), "{refused:?}");
    assert_eq!(count(&up, CUSTOMER), 0);

    // DNS SAN: the ledger may read customers, not payment methods.
    let ledger = clients.client(vec![dns("ledger.test.internal")]);
    let ch = tls_channel(addr, &ca.pem, Some(&ledger)).await.unwrap();
    CustomerServiceClient::new(ch.clone())
        .get_customer(get_customer())
        .await
        .unwrap();
    assert_eq!(count(&up, CUSTOMER), 1);
    let refused = PaymentMethodServiceClient::new(ch)
        .get_payment_method(get_pm())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(count(&up, PM), 1);

    // No certificate: UNAUTHENTICATED, unless a bearer token names a caller.
    let ch = tls_channel(addr, &ca.pem, None).await.unwrap();
    let refused = CustomerServiceClient::new(ch.clone())
        .get_customer(get_customer())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    CustomerServiceClient::new(ch)
        .get_customer(with_token(
            GetCustomerRequest {
                customer_id: "C1".into(),
            },
            "caller-token-mtls",
        ))
        .await
        .unwrap();
    assert_eq!(count(&up, CUSTOMER), 2);

    // A certificate from the client CA whose identity is in no policy.
    let stranger = clients.client(vec![spiffe("spiffe://test.internal/stranger")]);
    let ch = tls_channel(addr, &ca.pem, Some(&stranger)).await.unwrap();
    let refused = CustomerServiceClient::new(ch)
        .get_customer(get_customer())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // The vault's identity, signed by another CA: refused at the handshake.
    let forged = Ca::new("another CA").client(vec![spiffe("spiffe://test.internal/vault")]);
    let outcome = match tls_channel(addr, &ca.pem, Some(&forged)).await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => PaymentMethodServiceClient::new(ch)
            .get_payment_method(get_pm())
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}", s.code())),
    };
    assert!(outcome.is_err(), "a foreign certificate got in");
    assert_eq!(count(&up, PM), 1, "a refused call reached Imprint");
    assert_eq!(count(&up, CUSTOMER), 2);
    gw.shutdown().await.unwrap();

    // Certificates required, the default with a client CA (the runtime
    // contract's "require client certificates from this CA"): no
    // certificate, no connection (token or not).
    let dir = Dir::new();
    let env = tls_env(&dir.0, &ca.server(), Some(&clients));
    let gw = start(&up.url(), &dir.0, MTLS_POLICY, &env).await;
    let addr = gw.grpc_addr();
    let outcome = match tls_channel(addr, &ca.pem, None).await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => CustomerServiceClient::new(ch)
            .get_customer(with_token(
                GetCustomerRequest {
                    customer_id: "C1".into(),
                },
                "caller-token-mtls",
            ))
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}", s.code())),
    };
    assert!(outcome.is_err(), "a client without a certificate got in");
    let ch = tls_channel(addr, &ca.pem, Some(&ledger)).await.unwrap();
    CustomerServiceClient::new(ch)
        .get_customer(get_customer())
        .await
        .unwrap();
    assert_eq!(count(&up, CUSTOMER), 3);
    gw.shutdown().await.unwrap();
}

const TOKEN_POLICY: &str = r#"
[[callers]]
name = "tester"
token = "caller-token-tls"
allow = ["*"]
"#;

fn token_req() -> tonic::Request<GetCustomerRequest> {
    with_token(
        GetCustomerRequest {
            customer_id: "C1".into(),
        },
        "caller-token-tls",
    )
}

#[tokio::test]
async fn tls_serves_clients_trusting_its_ca_and_reloads_a_changed_certificate() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let dir = Dir::new();
    let first = Ca::new("first CA");
    let mut env = tls_env(&dir.0, &first.server(), None);
    env.push(("GATEWAY__SERVER__WATCH_INTERVAL", "200ms".into()));
    let gw = start(&up.url(), &dir.0, TOKEN_POLICY, &env).await;
    let addr = gw.grpc_addr();

    let old = tls_channel(addr, &first.pem, None).await.unwrap();
    let mut old_client = CustomerServiceClient::new(old);
    old_client.get_customer(token_req()).await.unwrap();

    // A plaintext client gets nothing.
    let plain = async {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        CustomerServiceClient::new(ch)
            .get_customer(token_req())
            .await
            .map_err(|s| format!("{:?}", s.code()))
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), plain)
            .await
            .unwrap()
            .is_err(),
        "plaintext call answered"
    );
    assert_eq!(count(&up, "/v2/customers/C1"), 1);

    // A new certificate from another CA: the file watch installs it.
    let second = Ca::new("second CA");
    tls_env(&dir.0, &second.server(), None);
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    let new = loop {
        if let Ok(ch) = tls_channel(addr, &second.pem, None).await {
            let mut c = CustomerServiceClient::new(ch);
            if c.get_customer(token_req()).await.is_ok() {
                break c;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(new);
    // New handshakes see the new certificate only...
    let stale = match tls_channel(addr, &first.pem, None).await {
        Err(_) => true,
        Ok(ch) => CustomerServiceClient::new(ch)
            .get_customer(token_req())
            .await
            .is_err(),
    };
    assert!(stale, "the old certificate is still served to new clients");
    // ...while the connection made before the reload keeps working.
    for _ in 0..3 {
        old_client.get_customer(token_req()).await.unwrap();
    }
    gw.shutdown().await.unwrap();
}

/// Subscribe over TLS: several streams on one TLS connection each get every
/// webhook's event, in order (the TLS connection type marks the activity
/// those streams read to batch their frames).
#[tokio::test]
async fn event_streams_over_tls_get_every_event_in_order() {
    use imprint_gateway::events::pb::{event_service_client::EventServiceClient, SubscribeRequest};
    let dir = Dir::new();
    let ca = Ca::new("events CA");
    let mut env = tls_env(&dir.0, &ca.server(), None);
    env.push(("IMPRINT_WEBHOOK_SECRET", crate::events::SECRET.into()));
    env.push(("GATEWAY_DATA_DIR", dir.0.join("data").display().to_string()));
    let gw = start("http://127.0.0.1:9", &dir.0, TOKEN_POLICY, &env).await;
    let ch = tls_channel(gw.grpc_addr(), &ca.pem, None).await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut client = EventServiceClient::new(ch.clone());
        let stream = client
            .subscribe(with_token(SubscribeRequest::default(), "caller-token-tls"))
            .await
            .unwrap()
            .into_inner();
        streams.push(stream);
    }
    let http = gw.http_addr().to_string();
    for id in ["evt-tls-1", "evt-tls-2"] {
        let body = crate::events::transaction(id, "C1");
        let (status, text) = crate::events::post_signed(&http, crate::events::SECRET, &body).await;
        assert_eq!(status, 200, "{text}");
    }
    for stream in &mut streams {
        let first = crate::events::next(stream).await;
        let second = crate::events::next(stream).await;
        assert_eq!(
            (first.event_id.as_str(), second.event_id.as_str()),
            ("evt-tls-1", "evt-tls-2")
        );
        assert!(first.cursor.parse::<u64>().unwrap() < second.cursor.parse::<u64>().unwrap());
    }
    gw.shutdown().await.unwrap();
}

/// The gateway binary with TLS: SIGHUP installs a replaced certificate;
/// no private key material (nor any other secret) shows in its logs.
#[tokio::test]
async fn sighup_reloads_the_certificate_and_no_key_material_is_logged() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let dir = Dir::new();
    let first = Ca::new("first CA");
    let first_leaf = first.server();
    let env = tls_env(&dir.0, &first_leaf, None);
    let callers = dir.0.join("callers.toml");
    std::fs::write(&callers, TOKEN_POLICY).unwrap();
    let log_path = dir.0.join("gateway.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"));
    cmd.arg("serve")
        .env("IMPRINT_API_BASE_URL", up.url())
        .env("IMPRINT_API_KEY", API_KEY)
        .env("IMPRINT_MERCHANT_KEY", MERCHANT_KEY)
        .env("GATEWAY_CALLER_TOKENS_FILE", &callers)
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        // SIGHUP only: the file watch is off.
        .env("GATEWAY__SERVER__WATCH_INTERVAL", "0s")
        .env("GATEWAY__CACHE__ENABLED", "false")
        .env("GATEWAY_LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (addr, _) = crate::harness::listening_in(&log_path).await;
    let mut old = None;
    for _ in 0..100 {
        if let Ok(ch) = tls_channel(addr, &first.pem, None).await {
            old = Some(CustomerServiceClient::new(ch));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut old = old.expect("the gateway listens with TLS");
    old.get_customer(token_req()).await.unwrap();

    let second = Ca::new("second CA");
    let second_leaf = second.server();
    tls_env(&dir.0, &second_leaf, None);
    // Not before the signal: there is no file watch.
    assert!(
        tls_channel(addr, &second.pem, None).await.is_err()
            || CustomerServiceClient::new(tls_channel(addr, &second.pem, None).await.unwrap())
                .get_customer(token_req())
                .await
                .is_err()
    );
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(ch) = tls_channel(addr, &second.pem, None).await {
            if CustomerServiceClient::new(ch)
                .get_customer(token_req())
                .await
                .is_ok()
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "SIGHUP did not install the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    old.get_customer(token_req()).await.unwrap();

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("TLS certificate reloaded"), "{logs}");
    let keys = [
        ("first TLS key", &first_leaf.key),
        ("second TLS key", &second_leaf.key),
    ];
    secrets_scan::assert_clean_with(&[("logs at trace level", &logs)], &tls_key_seeds(&keys));
}

/// Seeds for the secret scan: each base64 line of each PEM private key.
fn tls_key_seeds(keys: &[(&'static str, &String)]) -> Vec<(&'static str, String)> {
    keys.iter()
        .flat_map(|(what, pem)| {
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(move |l| (*what, l.to_string()))
        })
        .collect()
}

const PCI_POLICY: &str = r#"
[[callers]]
name = "card-vault"
token = "caller-token-pci"
allow = ["imprint.v2.PaymentMethodService/*"]
pci = true

[[callers]]
name = "checkout"
token = "caller-token-plain"
allow = ["imprint.v2.PaymentMethodService/*"]

[[callers]]
name = "ops"
token = "caller-token-ops"
admin = true
allow = ["imprint.gateway.v1.AdminService/*"]
"#;

#[tokio::test]
async fn pci_details_reach_pci_callers_only_and_never_the_request_log() {
    let up = FakeUpstream::start().await;
    up.on(
        Method::GET,
        "/v2/payment_methods/PM1",
        Reply::ok(card_payment_method_json()),
    );
    let dir = Dir::new();
    let policy = dir.0.join("pci-callers.toml");
    std::fs::write(&policy, PCI_POLICY).unwrap();
    let callers = policy.display().to_string();
    let gw = TestGateway::start_with(
        &up.url(),
        &[
            ("GATEWAY_CALLER_TOKENS_FILE", &callers),
            ("GATEWAY__SERVER__WATCH_INTERVAL", "200ms"),
        ],
    )
    .await;
    let mut client = PaymentMethodServiceClient::new(gw.channel.clone());
    let call = |token: &'static str| {
        with_token(
            GetPaymentMethodRequest {
                payment_method_id: "PM1".into(),
            },
            token,
        )
    };

    let pci = client
        .get_payment_method(call("caller-token-pci"))
        .await
        .unwrap();
    assert!(pci.metadata().get("x-pci-redacted").is_none());
    assert_eq!(pci.into_inner(), card_payment_method());

    let plain = client
        .get_payment_method(call("caller-token-plain"))
        .await
        .unwrap();
    assert_eq!(
        plain.metadata().get("x-pci-redacted").unwrap(),
        "pci_details"
    );
    let mut expected = card_payment_method();
    expected.card.as_mut().unwrap().pci_details = None;
    assert_eq!(plain.into_inner(), expected);
    // Both were the same call to Imprint.
    assert_eq!(count(&up, "/v2/payment_methods/PM1"), 2);

    // The request log shows neither caller the card data.
    let page = AdminServiceClient::new(gw.channel.clone())
        .list_upstream_calls(with_token(
            ListUpstreamCallsRequest::default(),
            "caller-token-ops",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.data.len(), 2);
    for entry in &page.data {
        assert!(
            !entry.response_body.contains("5105105105105100"),
            "{entry:?}"
        );
        assert!(!entry.response_body.contains("\"123\""), "{entry:?}");
    }
    let callers: Vec<&str> = page.data.iter().map(|e| e.caller.as_str()).collect();
    assert!(callers.contains(&"card-vault") && callers.contains(&"checkout"));

    // Lists too: every payment method of a list answer loses its card data
    // for a caller outside PCI scope, and keeps it for a PCI caller.
    up.on(
        Method::GET,
        "/v2/payment_methods",
        Reply::ok(format!(
            r#"{{"data":[{pm},{pm}],"has_more":false}}"#,
            pm = card_payment_method_json()
        )),
    );
    let list = |token: &'static str| {
        with_token(
            ListPaymentMethodsRequest {
                customer_id: "B40A789E".into(),
                ..Default::default()
            },
            token,
        )
    };
    let plain = client
        .list_payment_methods(list("caller-token-plain"))
        .await
        .unwrap();
    assert_eq!(
        plain.metadata().get("x-pci-redacted").unwrap(),
        "pci_details"
    );
    let plain = plain.into_inner();
    assert_eq!(plain.data.len(), 2);
    assert!(plain.data.iter().all(|pm| pm == &expected), "{plain:?}");
    let pci = client
        .list_payment_methods(list("caller-token-pci"))
        .await
        .unwrap();
    assert!(pci.metadata().get("x-pci-redacted").is_none());
    let pci = pci.into_inner();
    assert!(pci.data.iter().all(|pm| pm == &card_payment_method()));
    assert_eq!(count(&up, "/v2/payment_methods"), 2);

    // The policy file is watched: checkout brought into PCI scope by an
    // edit sees card data from the next calls on, without a restart.
    write_atomically(
        &policy,
        &PCI_POLICY.replace(
            "token = \"caller-token-plain\"",
            "token = \"caller-token-plain\"\npci = true",
        ),
    );
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = client
            .get_payment_method(call("caller-token-plain"))
            .await
            .unwrap()
            .into_inner();
        if got == card_payment_method() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the edited policy was never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const RATE_POLICY: &str = r#"
[[callers]]
name = "slow"
token = "caller-token-slow"
allow = ["imprint.v2.CustomerService/*"]
rate_per_sec = 0.001
burst = 2

[[callers]]
name = "fast"
token = "caller-token-fast"
allow = ["imprint.v2.CustomerService/*"]
"#;

#[tokio::test]
async fn a_callers_rate_limit_from_the_policy_applies_to_that_caller_only() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let dir = Dir::new();
    let callers = dir.0.join("rate-callers.toml");
    std::fs::write(&callers, RATE_POLICY).unwrap();
    let callers = callers.display().to_string();
    let gw = TestGateway::start_with(&up.url(), &[("GATEWAY_CALLER_TOKENS_FILE", &callers)]).await;
    let mut client = CustomerServiceClient::new(gw.channel.clone());
    let call = |token: &'static str| {
        with_token(
            GetCustomerRequest {
                customer_id: "C1".into(),
            },
            token,
        )
    };
    for _ in 0..2 {
        client
            .get_customer(call("caller-token-slow"))
            .await
            .unwrap();
    }
    let refused = client
        .get_customer(call("caller-token-slow"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    // The global default (100/s, burst 200) still holds for everyone else.
    for _ in 0..10 {
        client
            .get_customer(call("caller-token-fast"))
            .await
            .unwrap();
    }
    assert_eq!(count(&up, "/v2/customers/C1"), 12);
}

/// `imprint-gateway call` reaches an mTLS gateway as the caller its client
/// certificate names.
#[tokio::test]
async fn the_call_command_speaks_mtls() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let dir = Dir::new();
    let ca = Ca::new("gateway test CA");
    let clients = Ca::new("client CA");
    let env = tls_env(&dir.0, &ca.server(), Some(&clients));
    let gw = start(&up.url(), &dir.0, MTLS_POLICY, &env).await;
    let ledger = clients.client(vec![dns("ledger.test.internal")]);
    let files = [
        ("ca.pem", ca.pem.as_str()),
        ("ledger.pem", ledger.cert.as_str()),
        ("ledger.key", ledger.key.as_str()),
    ];
    for (name, text) in files {
        std::fs::write(dir.0.join(name), text).unwrap();
    }
    let path = |name: &str| dir.0.join(name).display().to_string();
    let args = vec![
        "call".to_string(),
        "--addr".into(),
        gw.grpc_addr().to_string(),
        "--ca".into(),
        path("ca.pem"),
        "--tls-server-name".into(),
        "localhost".into(),
        "--cert".into(),
        path("ledger.pem"),
        "--key".into(),
        path("ledger.key"),
        "imprint.v2.CustomerService/GetCustomer".into(),
        r#"{"customer_id":"C1"}"#.into(),
    ];
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_imprint-gateway"))
                .args(args)
                .env_remove("GATEWAY_TOKEN")
                .output()
                .unwrap()
        })
    };
    let out = run(args.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"id\""), "{stdout}");
    assert_eq!(count(&up, "/v2/customers/C1"), 1);
    // Without the certificate: refused at the handshake (the client CA
    // requires one), and the error says why.
    let without: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| !(7..=10).contains(i))
        .map(|(_, a)| a.clone())
        .collect();
    let out = run(without).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(stderr.contains("no --cert/--key given"), "{stderr}");
    assert_eq!(count(&up, "/v2/customers/C1"), 1);
    gw.shutdown().await.unwrap();
}

const SEAM_POLICY: &str = r#"
[[callers]]
name = "ledger"
dns_san = "ledger.test.internal"
allow = ["*"]

[[callers]]
name = "cobrand-svc"
spiffe_id = "spiffe://test.internal/cobrand"
allow = ["imprint.v2.CustomerService/*"]
products = ["cobrand-b"]

[[callers]]
name = "ops"
token = "caller-token-seam-admin"
admin = true
allow = ["*"]
"#;

/// Where #12's two halves meet: a caller named by its certificate is held
/// to its `products` like a token caller, and its refused admin calls are
/// in the audit log under its name.
#[tokio::test]
async fn certificate_callers_are_held_to_their_products_and_audited() {
    let up = FakeUpstream::start().await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    let dir = Dir::new();
    let ca = Ca::new("gateway test CA");
    let clients = Ca::new("client CA");
    let mut env = tls_env(&dir.0, &ca.server(), Some(&clients));
    // The admin below calls with a token and no certificate.
    env.push(("GATEWAY__SERVER__TLS_CLIENT_CERT_REQUIRED", "false".into()));
    env.push((
        "GATEWAY__CREDENTIALS__PRODUCTS",
        r#"[{ name = "cobrand-b", api_key_env = "SEAM_COBRAND_KEY" }]"#.into(),
    ));
    env.push(("SEAM_COBRAND_KEY", COBRAND_KEY.into()));
    let gw = start(&up.url(), &dir.0, SEAM_POLICY, &env).await;
    let addr = gw.grpc_addr();
    let product = |mut r: tonic::Request<GetCustomerRequest>, p: &str| {
        r.metadata_mut()
            .insert("x-imprint-product", p.parse().unwrap());
        r
    };
    let auth = |i: usize| up.requests()[i].header("authorization").map(str::to_owned);

    // No `products`: the default product only.
    let ledger = clients.client(vec![dns("ledger.test.internal")]);
    let ch = tls_channel(addr, &ca.pem, Some(&ledger)).await.unwrap();
    CustomerServiceClient::new(ch.clone())
        .get_customer(get_customer())
        .await
        .unwrap();
    let refused = CustomerServiceClient::new(ch.clone())
        .get_customer(product(get_customer(), "cobrand-b"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(up.requests().len(), 1);
    let default_auth = auth(0).unwrap();

    // `products = ["cobrand-b"]`: that product's key, and not the default.
    let cobrand = clients.client(vec![spiffe("spiffe://test.internal/cobrand")]);
    let ch2 = tls_channel(addr, &ca.pem, Some(&cobrand)).await.unwrap();
    CustomerServiceClient::new(ch2.clone())
        .get_customer(product(get_customer(), "cobrand-b"))
        .await
        .unwrap();
    assert_eq!(up.requests().len(), 2);
    assert_ne!(auth(1).unwrap(), default_auth);
    let refused = CustomerServiceClient::new(ch2)
        .get_customer(get_customer())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(up.requests().len(), 2);

    // The ledger (allow = ["*"], no admin) asks for the credentials: refused,
    // and the audit log names it.
    let refused = KeyManagementServiceClient::new(ch)
        .list_credentials(ListCredentialsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let admin_ch = tls_channel(addr, &ca.pem, None).await.unwrap();
    let denied = AdminServiceClient::new(admin_ch)
        .list_audit_events(with_token(
            ListAuditEventsRequest {
                outcome: Some("denied".into()),
                ..Default::default()
            },
            "caller-token-seam-admin",
        ))
        .await
        .unwrap()
        .into_inner()
        .data;
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0].actor, "ledger");
    assert_eq!(
        denied[0].action,
        "imprint.gateway.v1.KeyManagementService/ListCredentials"
    );
    gw.shutdown().await.unwrap();
}

/// Imprint is reached over HTTPS in production: the gateway negotiates
/// HTTP/2 by ALPN, trusts `upstream.extra_ca_file` beside the public roots,
/// and refuses an endpoint whose certificate no trusted CA signed (nothing
/// is sent to it).
#[tokio::test]
async fn serve_reaches_an_https_imprint_over_http2_trusting_the_extra_ca() {
    let staging = Ca::new("imprint staging CA");
    let leaf = staging.server();
    let up = FakeUpstream::start_tls(&leaf.cert, &leaf.key).await;
    up.on(Method::GET, "/v2/customers/C1", Reply::ok(customer_json()));
    assert!(up.url().starts_with("https://127.0.0.1:"));
    let dir = Dir::new();
    let ca_file = dir.0.join("imprint-ca.pem");
    std::fs::write(&ca_file, &staging.pem).unwrap();
    let call = |addr: SocketAddr| async move {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        CustomerServiceClient::new(ch)
            .get_customer(with_token(
                GetCustomerRequest {
                    customer_id: "C1".into(),
                },
                "caller-token-tls",
            ))
            .await
    };

    let env = [(
        "GATEWAY__UPSTREAM__EXTRA_CA_FILE",
        ca_file.display().to_string(),
    )];
    let gw = start(&up.url(), &dir.0, TOKEN_POLICY, &env).await;
    let customer = call(gw.grpc_addr()).await.unwrap().into_inner();
    assert_eq!(customer, crate::fixtures::customer());
    let sent = up.only_request();
    assert_eq!(sent.version, axum::http::Version::HTTP_2);
    assert_eq!(sent.method, Method::GET);
    assert_eq!(sent.path, "/v2/customers/C1");
    assert!(sent.headers.contains_key("authorization"));
    gw.shutdown().await.unwrap();

    // Only the public roots: the staging certificate is refused, and the
    // caller is told Imprint is unavailable.
    let gw = start(&up.url(), &dir.0, TOKEN_POLICY, &[]).await;
    let refused = call(gw.grpc_addr()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        up.requests().len(),
        1,
        "a request went to an untrusted endpoint"
    );
    gw.shutdown().await.unwrap();
}
