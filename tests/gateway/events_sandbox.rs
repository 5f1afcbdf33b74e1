//! `imprint-gateway sandbox` closes the loop: the emulator's webhooks go to
//! the gateway's own endpoint and arrive as typed events; `call` prints a
//! Subscribe stream as it arrives, one JSON object per line.

use std::{
    collections::BTreeSet,
    io::BufRead as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use imprint_gateway::{
    events::pb::{
        event::Payload, event_service_client::EventServiceClient, EventKind, StartPosition,
        SubscribeRequest,
    },
    pb::imprint::v2::{
        customer_link_service_client::CustomerLinkServiceClient,
        customer_service_client::CustomerServiceClient,
        customer_session_service_client::CustomerSessionServiceClient,
        sandbox_service_client::SandboxServiceClient, CreateCustomerSessionRequest,
        CustomerAccountHistory, LinkCustomerRequest, SearchCustomersRequest, SimulateRewardRequest,
        SimulateTransactionEventRequest, SimulatedRewardType, TransactionStatus,
    },
};
use tonic::transport::Channel;

use crate::harness::tempdir;

const WAIT: Duration = Duration::from_secs(20);

struct Sandbox {
    child: Child,
    grpc: u16,
    _cwd: tempdir::Dir,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sandbox() -> (Sandbox, Channel) {
    let cwd = tempdir::Dir::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imprint-gateway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("IMPRINT_") || k.starts_with("GATEWAY") {
            cmd.env_remove(k);
        }
    }
    // Port 0, and the address from the banner: a port picked in advance
    // can be taken by a parallel test before the sandbox binds it.
    let mut child = cmd
        .arg("sandbox")
        .current_dir(&cwd.0)
        .env("GATEWAY_GRPC_ADDR", "127.0.0.1:0")
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the sandbox");
    let stdout = child.stdout.take().expect("the sandbox's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let addr = line
                .trim()
                .strip_prefix("gRPC gateway")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
            if let Some(addr) = addr {
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "the sandbox printed no gRPC address: {:?}",
            child.try_wait()
        )
    });
    let sandbox = Sandbox {
        child,
        grpc: addr.port(),
        _cwd: cwd,
    };
    let start = Instant::now();
    let channel = loop {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            break c;
        }
        assert!(start.elapsed() < WAIT, "the sandbox did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (sandbox, channel)
}

#[tokio::test]
async fn emulator_webhooks_arrive_as_typed_events() {
    let (sb, ch) = sandbox().await;
    let mut events = EventServiceClient::new(ch.clone())
        .subscribe(SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // A new customer whose last name approves: APPLICATION, PAYMENT_METHOD.
    CustomerSessionServiceClient::new(ch.clone())
        .create_customer_session(CreateCustomerSessionRequest {
            partner_customer_id: Some("EV-1".into()),
            customer_history: Some(CustomerAccountHistory {
                first_name: Some("Eve".into()),
                last_name: Some("approve".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let customer = CustomerServiceClient::new(ch.clone())
        .search_customers(SearchCustomersRequest {
            partner_customer_id: Some("EV-1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .data
        .remove(0);

    let mut kinds = BTreeSet::new();
    let mut card = None;
    let mut next_step = 0;
    let start = Instant::now();
    while kinds.len() < 5 {
        assert!(
            start.elapsed() < WAIT,
            "kinds seen so far: {kinds:?} (step {next_step})"
        );
        let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_secs(2), events.message()).await
        else {
            continue;
        };
        assert!(!e.raw_json.is_empty());
        kinds.insert(e.kind);
        if let Some(Payload::PaymentMethod(pm)) = &e.payload {
            card = Some(pm.payment_method_id.clone());
        }
        // Each step once the previous one's webhook is in.
        if next_step == 0 && card.is_some() {
            next_step = 1;
            let link = CustomerLinkServiceClient::new(ch.clone())
                .link_customer(LinkCustomerRequest {
                    customer_id: customer.id.clone(),
                    partner_customer_id: "EV-1-LINK".into(),
                    ..Default::default()
                })
                .await;
            assert!(link.is_ok(), "{link:?}");
            let mut sandbox = SandboxServiceClient::new(ch.clone());
            sandbox
                .simulate_transaction_event(SimulateTransactionEventRequest {
                    payment_method_id: card.clone().unwrap(),
                    status: TransactionStatus::Approved as i32,
                    amount: Some(8000),
                    currency: Some("USD".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            // Whichever reward program the product has.
            for t in [SimulatedRewardType::Statement, SimulatedRewardType::Delayed] {
                let _ = sandbox
                    .simulate_reward(SimulateRewardRequest {
                        customer_id: customer.id.clone(),
                        reward_type: t as i32,
                    })
                    .await;
            }
        }
    }
    let expected: BTreeSet<i32> = [
        EventKind::Application,
        EventKind::PaymentMethod,
        EventKind::CustomerLink,
        EventKind::Transaction,
        EventKind::Reward,
    ]
    .into_iter()
    .map(|k| k as i32)
    .collect();
    assert_eq!(kinds, expected);

    // `call` prints the same stream, one JSON object per line.
    let mut call = Command::new(env!("CARGO_BIN_EXE_imprint-gateway"))
        .args([
            "call",
            "--addr",
            &format!("127.0.0.1:{}", sb.grpc),
            "imprint.gateway.v1.EventService/Subscribe",
            r#"{"start":"START_POSITION_OLDEST"}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = call.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().take(5) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines.len() < 5 {
        match rx.recv_timeout(WAIT) {
            Ok(l) => lines.push(l),
            Err(e) => {
                let _ = call.kill();
                let out = call.wait_with_output().unwrap();
                panic!(
                    "{e}: got {lines:?}; stderr {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    let _ = call.kill();
    let _ = call.wait();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
        assert!(v["cursor"].is_string() && v["raw_json"].is_string(), "{l}");
    }
}
