//! The route generator on throw-away protos: a new RPC is routed from its
//! annotations alone, and each broken annotation is refused with the RPC's
//! name. These protos are compiled here with protox, exactly as `build.rs`
//! compiles `proto/`, against the same vendored `google/api` files and
//! `options.proto`; they are never part of the served surface.

use std::path::PathBuf;

use prost_reflect::DescriptorPool;

use super::{
    generate::{rpcs, Rpc},
    generate_render::{render_redacted_debug, render_routes, snake},
};

/// Compiles `source` as `throwaway/v1/test.proto` next to the real `proto/`.
fn compile(name: &str, source: &str) -> DescriptorPool {
    let dir = std::env::temp_dir().join(format!("imprint-gen-{}-{name}", std::process::id()));
    let file = dir.join("throwaway/v1/test.proto");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, source).unwrap();
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([dir.clone(), proto]).unwrap();
    compiler
        .include_imports(true)
        .open_files(["throwaway/v1/test.proto"])
        .unwrap();
    let pool = compiler.descriptor_pool();
    std::fs::remove_dir_all(&dir).unwrap();
    pool
}

const HEADER: &str = r#"
syntax = "proto3";
package throwaway.v1;
import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/protobuf/empty.proto";
import "imprint/gateway/v1/options.proto";
"#;

#[test]
fn a_new_rpc_is_routed_from_its_annotations_alone() {
    let pool = compile(
        "new",
        &format!(
            r#"{HEADER}
service WidgetService {{
  rpc GetWidget(GetWidgetRequest) returns (Widget) {{
    option (google.api.http) = {{get: "/v2/shops/{{shop_id}}/widgets/{{widget_id}}"}};
  }}
  rpc SearchWidgets(SearchWidgetsRequest) returns (Widget) {{
    option (google.api.http) = {{get: "/v2/widgets"}};
  }}
  rpc CreateWidget(CreateWidgetRequest) returns (Widget) {{
    option (google.api.http) = {{post: "/v2/widgets", body: "*"}};
  }}
  rpc DeleteWidget(DeleteWidgetRequest) returns (google.protobuf.Empty) {{
    option (google.api.http) = {{delete: "/v2/widgets/{{widget_id}}"}};
  }}
}}
message Widget {{
  string id = 1 [(google.api.field_behavior) = OUTPUT_ONLY];
  Vault vault = 2;
}}
message Vault {{
  optional string code = 1 [(imprint.gateway.v1.sensitive) = true];
}}
message GetWidgetRequest {{
  string shop_id = 1 [(google.api.field_behavior) = REQUIRED];
  string widget_id = 2 [(google.api.field_behavior) = REQUIRED];
  optional int32 limit = 3;
}}
message SearchWidgetsRequest {{
  optional string name = 1;
  optional string serial = 2 [(imprint.gateway.v1.sensitive) = true];
}}
message CreateWidgetRequest {{
  string name = 1 [(google.api.field_behavior) = REQUIRED];
  optional int64 weight = 2 [(google.api.field_behavior) = REQUIRED];
  optional string note = 3;
  repeated Part parts = 4;
}}
message Part {{
  string sku = 1 [(google.api.field_behavior) = REQUIRED];
  optional int64 count = 2 [(google.api.field_behavior) = REQUIRED];
}}
message DeleteWidgetRequest {{
  string widget_id = 1 [(google.api.field_behavior) = REQUIRED];
}}
"#
        ),
    );
    let routes = rpcs(&pool, "throwaway.v1").unwrap();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let rpc = |name: &str| routes.iter().find(|r| r.name == name).unwrap().clone();
    assert_eq!(
        rpc("GetWidget"),
        Rpc {
            service: "WidgetService".into(),
            name: "GetWidget".into(),
            full_name: "throwaway.v1.WidgetService/GetWidget".into(),
            input: "GetWidgetRequest".into(),
            output: Some("Widget".into()),
            method: "GET",
            path: "/v2/shops/{shop_id}/widgets/{widget_id}".into(),
            body: false,
            query: s(&["limit"]),
            required: s(&["shop_id", "widget_id"]),
            sensitive: vec![],
            secret_response: s(&["code"]),
            nested_required: String::new(),
            mutating: false,
        }
    );
    let search = rpc("SearchWidgets");
    assert_eq!(
        search.query,
        s(&["name"]),
        "a sensitive field is never a query parameter"
    );
    assert_eq!(search.sensitive, s(&["serial"]));
    assert!(!search.mutating);
    let create = rpc("CreateWidget");
    assert_eq!(
        (create.method, create.body, create.mutating),
        ("POST", true, true)
    );
    assert_eq!(create.required, s(&["name", "weight"]));
    assert!(create.query.is_empty());
    for check in [
        "for (i0, item0) in self.parts.iter().enumerate() {",
        "if item0.sku.is_empty() { let field = format!(\"parts[{}].sku\", i0);",
        "if item0.count.is_none() { let field = format!(\"parts[{}].count\", i0);",
    ] {
        assert!(
            create.nested_required.contains(check),
            "{check:?} missing from:\n{}",
            create.nested_required
        );
    }
    let delete = rpc("DeleteWidget");
    assert_eq!(
        (delete.method, delete.body, delete.output),
        ("DELETE", false, None)
    );

    let code = render_routes(&routes, "pb", &[]);
    for expected in [
        "impl crate::translate::Endpoint for pb::GetWidgetRequest {",
        "method: http::Method::GET,",
        "path: \"/v2/shops/{shop_id}/widgets/{widget_id}\",",
        "\"/throwaway.v1.WidgetService/SearchWidgets\" => Ok(crate::services::reply::unary::<pb::SearchWidgetsRequest>(gateway.clone(), config, req)),",
        "crate::translate::SensitiveValue::collect(&self.serial, out);",
        "type Response = ();",
        "widget_service_server::WidgetServiceServer",
    ] {
        assert!(
            code.contains(expected),
            "{expected:?} missing from:\n{code}"
        );
    }
    let (redacted, debug) = render_redacted_debug(&pool, "throwaway.v1").unwrap();
    assert_eq!(
        redacted,
        s(&[".throwaway.v1.Vault", ".throwaway.v1.SearchWidgetsRequest"])
    );
    assert!(
        debug.contains(".field(\"serial\", &self.serial.as_ref().map(|_| crate::pb::REDACTED))")
    );
}

#[test]
fn a_broken_annotation_fails_the_build_naming_the_rpc() {
    let pool = compile(
        "broken",
        &format!(
            r#"{HEADER}
service Broken {{
  rpc NoRule(Req) returns (Req);
  rpc UnknownParam(Req) returns (Req) {{
    option (google.api.http) = {{get: "/v2/things/{{thing_id}}"}};
  }}
  rpc GetWithBody(Req) returns (Req) {{
    option (google.api.http) = {{get: "/v2/things", body: "*"}};
  }}
  rpc OptionalParam(Req) returns (Req) {{
    option (google.api.http) = {{get: "/v2/things/{{id}}"}};
  }}
  rpc SecretParam(Secret) returns (Req) {{
    option (google.api.http) = {{get: "/v2/secrets/{{code}}"}};
  }}
  rpc PostWithoutBody(Amount) returns (Req) {{
    option (google.api.http) = {{post: "/v2/amounts"}};
  }}
  rpc Custom(Req) returns (Req) {{
    option (google.api.http) = {{custom: {{kind: "HEAD", path: "/v2/things"}}}};
  }}
  rpc Wildcard(Req) returns (Req) {{
    option (google.api.http) = {{get: "/v2/{{id=things/*}}"}};
  }}
  rpc NestedWithoutPresence(Outer) returns (Req) {{
    option (google.api.http) = {{post: "/v2/outer", body: "*"}};
  }}
}}
message Outer {{
  repeated Inner inner = 1;
}}
message Inner {{
  int64 n = 1 [(google.api.field_behavior) = REQUIRED];
}}
message Req {{
  string id = 1;
}}
message Secret {{
  string code = 1 [(google.api.field_behavior) = REQUIRED, (imprint.gateway.v1.sensitive) = true];
}}
message Amount {{
  int64 amount = 1 [(google.api.field_behavior) = REQUIRED];
}}
"#
        ),
    );
    let errors = rpcs(&pool, "throwaway.v1").unwrap_err();
    for (rpc, reason) in [
        ("NoRule", "no `option (google.api.http)`"),
        (
            "UnknownParam",
            "path parameter {thing_id} is not a field of Req",
        ),
        ("GetWithBody", "a GET has no body"),
        (
            "OptionalParam",
            "path parameter id must be `[(google.api.field_behavior) = REQUIRED]`",
        ),
        ("SecretParam", "path parameter code is sensitive"),
        (
            "PostWithoutBody",
            "a POST sends its fields as JSON: add `body: \"*\"`",
        ),
        ("PostWithoutBody", "REQUIRED field amount has no presence"),
        ("Custom", "needs one of get, put, post, delete, patch"),
        ("Wildcard", "whole-segment `{field}` variables"),
        (
            "NestedWithoutPresence",
            "REQUIRED field Inner.n has no presence",
        ),
    ] {
        let prefix = format!("rpc throwaway.v1.Broken/{rpc}: ");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&prefix) && e.contains(reason)),
            "no error {prefix}…{reason} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 10, "{errors:#?}");
}

#[test]
fn method_names_are_spelled_as_tonic_spells_them() {
    assert_eq!(snake("GetRewardsBalance"), "get_rewards_balance");
    assert_eq!(snake("CustomerService"), "customer_service");
    assert_eq!(
        snake("ListCustomerTransactionIntents"),
        "list_customer_transaction_intents"
    );
    assert_eq!(snake("GetURLMap"), "get_url_map");
}
