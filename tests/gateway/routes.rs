//! The proto is the single source of truth: the annotations are served by
//! reflection, every `imprint.v2` method has an http rule, and both what
//! reflection shows and the generated route table equal the contract's
//! table (`grpc-api.md`, "imprint.v2 services → REST") row for row.

use std::collections::{BTreeMap, BTreeSet};

use imprint_gateway::services::ROUTES;
use prost::Message;
use prost_reflect::{DescriptorPool, Value};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

use crate::harness::{req, FakeUpstream, TestGateway};

/// The contract's table: service, rpc, HTTP method, template, `body: "*"`.
const CONTRACT: &[(&str, &str, &str, &str, bool)] = &[
    (
        "CustomerService",
        "SearchCustomers",
        "GET",
        "/v2/customers",
        false,
    ),
    (
        "CustomerService",
        "GetCustomer",
        "GET",
        "/v2/customers/{customer_id}",
        false,
    ),
    (
        "CustomerService",
        "UpdateCustomer",
        "POST",
        "/v2/customers/{customer_id}",
        true,
    ),
    (
        "CustomerService",
        "GetRewardsBalance",
        "GET",
        "/v2/customers/{customer_id}/rewards_balance",
        false,
    ),
    (
        "CustomerService",
        "ListCustomerPaymentMethods",
        "GET",
        "/v2/customers/{customer_id}/payment_methods",
        false,
    ),
    (
        "CustomerService",
        "ListCustomerTransactionIntents",
        "GET",
        "/v2/customers/{customer_id}/transaction_intents",
        false,
    ),
    (
        "CustomerService",
        "ListCustomerTransactions",
        "GET",
        "/v2/customers/{customer_id}/transactions",
        false,
    ),
    (
        "CustomerService",
        "ListCustomerRewards",
        "GET",
        "/v2/customers/{customer_id}/rewards",
        false,
    ),
    (
        "CustomerLinkService",
        "LinkCustomer",
        "POST",
        "/v2/customers/{customer_id}/link",
        true,
    ),
    (
        "CustomerSessionService",
        "CreateCustomerSession",
        "POST",
        "/v2/customer_sessions",
        true,
    ),
    (
        "CustomerSessionService",
        "GetCustomerSession",
        "GET",
        "/v2/customer_sessions/{session_id}",
        false,
    ),
    (
        "PaymentMethodService",
        "ListPaymentMethods",
        "GET",
        "/v2/payment_methods",
        false,
    ),
    (
        "PaymentMethodService",
        "GetPaymentMethod",
        "GET",
        "/v2/payment_methods/{payment_method_id}",
        false,
    ),
    (
        "TransactionIntentService",
        "CreateTransactionIntent",
        "POST",
        "/v2/transaction_intents",
        true,
    ),
    (
        "TransactionIntentService",
        "ListTransactionIntents",
        "GET",
        "/v2/transaction_intents",
        false,
    ),
    (
        "TransactionIntentService",
        "GetTransactionIntent",
        "GET",
        "/v2/transaction_intents/{intent_id}",
        false,
    ),
    (
        "TransactionIntentService",
        "UpdateTransactionIntent",
        "POST",
        "/v2/transaction_intents/{intent_id}",
        true,
    ),
    (
        "TransactionService",
        "GetTransaction",
        "GET",
        "/v2/transactions/{transaction_id}",
        false,
    ),
    (
        "RewardService",
        "SearchRewards",
        "GET",
        "/v2/rewards",
        false,
    ),
    (
        "RewardService",
        "GetReward",
        "GET",
        "/v2/rewards/{reward_id}",
        false,
    ),
    (
        "RewardService",
        "UpdateReward",
        "PATCH",
        "/v2/rewards/{reward_id}",
        true,
    ),
    ("OfferService", "GetOffer", "GET", "/v2/offers", false),
    ("OrderService", "ListOrders", "GET", "/v2/orders", false),
    ("OrderService", "CreateOrder", "POST", "/v2/orders", true),
    (
        "OrderService",
        "UpdateOrder",
        "PUT",
        "/v2/orders/{order_id}",
        true,
    ),
    (
        "OrderService",
        "DeleteOrder",
        "DELETE",
        "/v2/orders/{order_id}",
        false,
    ),
    (
        "OrderEventService",
        "ListOrderEvents",
        "GET",
        "/v2/order_events",
        false,
    ),
    (
        "OrderEventService",
        "CreateOrderEvent",
        "POST",
        "/v2/order_events",
        true,
    ),
    (
        "OrderEventService",
        "DeleteOrderEvent",
        "DELETE",
        "/v2/order_events/{order_event_id}",
        false,
    ),
    (
        "SandboxService",
        "SimulateTransactionEvent",
        "POST",
        "/v2/simulate_transaction_event",
        true,
    ),
    (
        "SandboxService",
        "SimulateStatementReward",
        "POST",
        "/v2/simulate_statement_reward",
        true,
    ),
    (
        "SandboxService",
        "SimulateReward",
        "POST",
        "/v2/simulate_reward",
        true,
    ),
    // Imprint's `POST /v2/keys` takes no body (CreateKeyRequest has no field).
    ("KeyService", "CreateKey", "POST", "/v2/keys", false),
    ("KeyService", "DeleteKey", "DELETE", "/v2/keys", false),
];

type Row = (String, String, String, bool);

fn contract_rows() -> BTreeSet<Row> {
    CONTRACT
        .iter()
        .map(|(service, rpc, method, path, body)| {
            (
                format!("imprint.v2.{service}/{rpc}"),
                method.to_string(),
                path.to_string(),
                *body,
            )
        })
        .collect()
}

/// One reflection round trip.
async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    r: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r),
    };
    let mut stream = client
        .server_reflection_info(req(tokio_stream::iter(vec![request])))
        .await
        .unwrap()
        .into_inner();
    stream
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

/// Every served `imprint.v2` file and its dependencies, fetched the way a
/// reflection client does, as the pool the served bytes describe.
async fn served_pool(gw: &TestGateway) -> (DescriptorPool, Vec<String>) {
    let mut client = ServerReflectionClient::new(gw.channel.clone());
    let MessageResponse::ListServicesResponse(list) =
        ask(&mut client, MessageRequest::ListServices(String::new())).await
    else {
        panic!("no service list");
    };
    let services: Vec<String> = list
        .service
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("imprint.v2."))
        .collect();

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut pending: Vec<MessageRequest> = services
        .iter()
        .map(|s| MessageRequest::FileContainingSymbol(s.clone()))
        .collect();
    while let Some(r) = pending.pop() {
        let MessageResponse::FileDescriptorResponse(fd) = ask(&mut client, r).await else {
            panic!("no file");
        };
        for raw in fd.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap();
            for dep in &file.dependency {
                if !files.contains_key(dep) {
                    pending.push(MessageRequest::FileByFilename(dep.clone()));
                }
            }
            files.insert(file.name().to_owned(), raw);
        }
    }
    // A FileDescriptorSet is `repeated FileDescriptorProto file = 1`: the
    // served bytes go in unchanged, so the annotations are exactly what
    // reflection clients see.
    let mut set = Vec::new();
    for raw in files.values() {
        prost::encoding::bytes::encode(1, raw, &mut set);
    }
    (DescriptorPool::decode(set.as_slice()).unwrap(), services)
}

#[tokio::test]
async fn reflection_serves_an_http_rule_for_every_method_equal_to_the_contract() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::start(&up).await;
    let (pool, services) = served_pool(&gw).await;

    for file in [
        "google/api/http.proto",
        "google/api/annotations.proto",
        "google/api/field_behavior.proto",
        "imprint/gateway/v1/options.proto",
    ] {
        assert!(
            pool.get_file_by_name(file).is_some(),
            "{file} is not served"
        );
    }
    let http = pool.get_extension_by_name("google.api.http").unwrap();
    let behavior = pool
        .get_extension_by_name("google.api.field_behavior")
        .unwrap();
    let sensitive = pool
        .get_extension_by_name("imprint.gateway.v1.sensitive")
        .unwrap();

    let mut served = BTreeSet::new();
    for name in &services {
        let service = pool.get_service_by_name(name).unwrap();
        for method in service.methods() {
            let full = format!("{name}/{}", method.name());
            let options = method.options();
            assert!(
                options.has_extension(&http),
                "{full} has no google.api.http rule"
            );
            let rule = options.get_extension(&http);
            let rule = rule.as_message().unwrap();
            let (verb, path) = ["get", "put", "post", "delete", "patch"]
                .into_iter()
                .find_map(|v| {
                    rule.has_field_by_name(v).then(|| {
                        let path = rule.get_field_by_name(v).unwrap();
                        (v.to_uppercase(), path.as_str().unwrap().to_owned())
                    })
                })
                .unwrap_or_else(|| panic!("{full}: no verb"));
            let body = rule.get_field_by_name("body").unwrap();
            assert!(matches!(body.as_str(), Some("" | "*")), "{full}");
            served.insert((full.clone(), verb, path.clone(), body.as_str() == Some("*")));

            // Every path parameter is a REQUIRED field of the request.
            let input = method.input();
            for param in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                let field = input
                    .get_field_by_name(param)
                    .unwrap_or_else(|| panic!("{full}: {param}"));
                let options = field.options();
                let behaviors = options.get_extension(&behavior);
                assert!(
                    behaviors.as_list().unwrap().contains(&Value::EnumNumber(2)),
                    "{full}: path parameter {param} is not REQUIRED"
                );
            }
        }
    }
    assert_eq!(
        served,
        contract_rows(),
        "served annotations differ from the contract"
    );

    // The sensitive option is served too.
    let ssn = pool
        .get_message_by_name("imprint.v2.SearchCustomersRequest")
        .unwrap()
        .get_field_by_name("ssn")
        .unwrap();
    assert_eq!(
        ssn.options().get_extension(&sensitive).as_bool(),
        Some(true)
    );
}

#[test]
fn the_generated_route_table_equals_the_contract() {
    let generated: BTreeSet<Row> = ROUTES
        .iter()
        .map(|r| {
            (
                r.rpc.to_owned(),
                r.method.to_string(),
                r.path.to_owned(),
                r.body,
            )
        })
        .collect();
    assert_eq!(generated.len(), ROUTES.len(), "one route per RPC");
    assert_eq!(generated, contract_rows());

    for r in ROUTES {
        let rpc = r.rpc.rsplit('/').next().unwrap();
        let changes_state = ["Create", "Update", "Delete", "Link", "Simulate"]
            .iter()
            .any(|p| rpc.starts_with(p));
        assert_eq!(r.mutating, changes_state, "{}", r.rpc);
    }
    let by_rpc = |name: &str| ROUTES.iter().find(|r| r.rpc.ends_with(name)).unwrap();
    assert_eq!(
        by_rpc("/SearchCustomers").sensitive_request_fields,
        ["ssn", "date_of_birth"]
    );
    assert_eq!(
        by_rpc("/SearchCustomers").query,
        ["partner_customer_id", "limit", "starting_after"]
    );
    assert_eq!(
        by_rpc("/ListPaymentMethods").sensitive_request_fields,
        ["pan"]
    );
    assert_eq!(
        by_rpc("/GetCustomerSession").secret_response_fields,
        ["client_secret"]
    );
    assert_eq!(
        by_rpc("/ListPaymentMethods").secret_response_fields,
        ["pci_details"]
    );
    assert_eq!(
        by_rpc("/CreateTransactionIntent").required,
        ["customer_id", "amount", "currency"]
    );
}
