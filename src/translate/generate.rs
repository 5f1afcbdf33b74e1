//! The route-table generator: reads the proto annotations and writes the
//! Rust that serves every RPC.
//!
//! What an RPC is (method, path template, body, required and sensitive
//! fields) is declared once in the proto with `google.api.http`,
//! `google.api.field_behavior` and `imprint.gateway.v1.sensitive`. This
//! module turns those declarations into [`Rpc`] entries, refusing any
//! annotation the gateway cannot honour with an error that names the RPC,
//! and `generate_render.rs` renders the `Endpoint` impls, the tonic service
//! impls, the list of served services and the redacted `Debug` impls.
//!
//! It is included by `build.rs` (`#[path]`) and, under `cfg(test)`, by the
//! library, so that its refusals are unit-tested on throw-away protos
//! without breaking the real build.

use std::{collections::BTreeSet, fmt::Write as _};

use prost_reflect::{
    DescriptorPool, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};

/// `google.api.FieldBehavior.REQUIRED`.
const REQUIRED: i32 = 2;

/// One RPC as its annotations declare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rpc {
    /// `CustomerService`.
    pub(crate) service: String,
    /// `GetCustomer`.
    pub(crate) name: String,
    /// `imprint.v2.CustomerService/GetCustomer`.
    pub(crate) full_name: String,
    /// The request message's name (in the RPC's package).
    pub(crate) input: String,
    /// The response message's name; `None` for `google.protobuf.Empty`.
    pub(crate) output: Option<String>,
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub(crate) method: &'static str,
    /// Path template, `{field}` segments filled from the request.
    pub(crate) path: String,
    /// `body: "*"`: every non-path field goes in the JSON body.
    pub(crate) body: bool,
    /// Fields sent as the query string (rules without a body).
    pub(crate) query: Vec<String>,
    /// Fields marked `REQUIRED`.
    pub(crate) required: Vec<String>,
    /// Request fields marked sensitive.
    pub(crate) sensitive: Vec<String>,
    /// Response fields (at any depth) marked sensitive.
    pub(crate) secret_response: Vec<String>,
    /// Rust statements checking the `REQUIRED` fields of nested request
    /// messages (e.g. each `order_lines[i].quantity`); empty when none.
    pub(crate) nested_required: String,
    /// Whether the call changes state (every rule but GET).
    pub(crate) mutating: bool,
}

/// The extensions the generator reads, as the pool knows them.
pub(crate) struct Annotations {
    http: Option<ExtensionDescriptor>,
    behavior: Option<ExtensionDescriptor>,
    sensitive: Option<ExtensionDescriptor>,
}

impl Annotations {
    pub(crate) fn new(pool: &DescriptorPool) -> Self {
        Self {
            http: pool.get_extension_by_name("google.api.http"),
            behavior: pool.get_extension_by_name("google.api.field_behavior"),
            sensitive: pool.get_extension_by_name("imprint.gateway.v1.sensitive"),
        }
    }

    fn required(&self, field: &FieldDescriptor) -> bool {
        let Some(ext) = &self.behavior else {
            return false;
        };
        let options = field.options();
        let value = options.get_extension(ext);
        value
            .as_list()
            .is_some_and(|l| l.iter().any(|v| v.as_enum_number() == Some(REQUIRED)))
    }

    pub(crate) fn sensitive(&self, field: &FieldDescriptor) -> bool {
        let Some(ext) = &self.sensitive else {
            return false;
        };
        field.options().get_extension(ext).as_bool() == Some(true)
    }
}

/// Every RPC of `package`, in declaration order, or every problem found
/// (each message names its RPC).
pub(crate) fn rpcs(pool: &DescriptorPool, package: &str) -> Result<Vec<Rpc>, Vec<String>> {
    let ann = Annotations::new(pool);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for service in pool.services().filter(|s| s.package_name() == package) {
        for method in service.methods() {
            match rpc(&ann, package, &method) {
                Ok(r) => out.push(r),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn rpc(ann: &Annotations, package: &str, m: &MethodDescriptor) -> Result<Rpc, Vec<String>> {
    let full_name = format!("{}/{}", m.parent_service().full_name(), m.name());
    let mut errors = Vec::new();
    let mut fail = |msg: String| errors.push(format!("rpc {full_name}: {msg}"));

    if m.is_client_streaming() || m.is_server_streaming() {
        fail("streaming RPCs have no REST mapping".into());
    }
    let input = m.input();
    if input.package_name() != package {
        fail(format!(
            "request {} is outside {package}",
            input.full_name()
        ));
    }
    let output = m.output();
    let output_name = if output.full_name() == "google.protobuf.Empty" {
        None
    } else {
        if output.package_name() != package {
            fail(format!(
                "response {} is outside {package}",
                output.full_name()
            ));
        }
        Some(output.name().to_owned())
    };

    let options = m.options();
    let rule = match &ann.http {
        Some(ext) if options.has_extension(ext) => options.get_extension(ext).as_message().cloned(),
        _ => None,
    };
    let Some(rule) = rule else {
        fail("no `option (google.api.http)`: every RPC declares its REST mapping".into());
        return Err(errors);
    };
    let mut pattern = None;
    for (method, http) in [
        ("get", "GET"),
        ("put", "PUT"),
        ("post", "POST"),
        ("delete", "DELETE"),
        ("patch", "PATCH"),
    ] {
        if rule.has_field_by_name(method) {
            let template = rule
                .get_field_by_name(method)
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            pattern = Some((http, template));
        }
    }
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let body = text("body");
    if !text("response_body").is_empty() {
        fail("`response_body` is not supported: the response is the whole message".into());
    }
    if rule
        .get_field_by_name("additional_bindings")
        .is_some_and(|v| v.as_list().is_some_and(|l| !l.is_empty()))
    {
        fail("`additional_bindings` are not supported".into());
    }
    let Some((method, path)) = pattern else {
        fail("the http rule needs one of get, put, post, delete, patch".into());
        return Err(errors);
    };
    let has_body = match body.as_str() {
        "" => false,
        "*" => true,
        other => {
            fail(format!("body {other:?}: only `body: \"*\"` is supported"));
            true
        }
    };
    let bodyless = method == "GET" || method == "DELETE";
    if has_body && bodyless {
        fail(format!("a {method} has no body; remove `body`"));
    }
    // A request without fields has nothing to send: no body at all (Imprint's
    // `POST /v2/keys` takes none).
    if !has_body && !bodyless && input.fields().len() > 0 {
        fail(format!(
            "a {method} sends its fields as JSON: add `body: \"*\"`"
        ));
    }

    let params = match path_params(&path) {
        Ok(p) => p,
        Err(e) => {
            fail(e);
            Vec::new()
        }
    };
    for param in &params {
        match input.get_field_by_name(param) {
            None => fail(format!(
                "path parameter {{{param}}} is not a field of {}",
                input.name()
            )),
            Some(f) => {
                if !ann.required(&f) {
                    fail(format!(
                        "path parameter {param} must be `[(google.api.field_behavior) = REQUIRED]`"
                    ));
                }
                if f.is_list() || f.is_map() || !matches!(f.kind(), Kind::String) {
                    fail(format!("path parameter {param} must be a singular string"));
                }
                if ann.sensitive(&f) {
                    fail(format!(
                        "path parameter {param} is sensitive: it would be in the URL"
                    ));
                }
            }
        }
    }

    let mut query = Vec::new();
    let mut required = Vec::new();
    let mut sensitive = Vec::new();
    for f in input.fields() {
        let name = f.name().to_owned();
        if f.containing_oneof().is_some_and(|o| !o.is_synthetic()) {
            fail(format!(
                "field {name} is in a oneof, which has no REST mapping"
            ));
        }
        let is_sensitive = ann.sensitive(&f);
        if ann.required(&f) {
            let scalar = !f.is_list()
                && !f.is_map()
                && !matches!(f.kind(), Kind::Message(_) | Kind::Enum(_) | Kind::String);
            if scalar && !f.supports_presence() {
                fail(format!(
                    "REQUIRED field {name} has no presence, so a missing value would be sent as 0: declare it `optional`"
                ));
            }
            required.push(name.clone());
        }
        if is_sensitive {
            sensitive.push(name.clone());
        }
        let in_path = params.contains(&name);
        if !has_body && !in_path && !is_sensitive {
            if f.is_list() || f.is_map() || matches!(f.kind(), Kind::Message(_)) {
                fail(format!(
                    "field {name} would be a query parameter but is not a scalar"
                ));
            }
            query.push(name);
        }
    }

    let mut nested_required = String::new();
    for f in input.fields() {
        nested_checks(
            ann,
            &f,
            ("self", "", Vec::new()),
            0,
            &mut nested_required,
            &mut fail,
        );
    }

    let mut secret_response = Vec::new();
    secret_fields(ann, &output, &mut BTreeSet::new(), &mut secret_response);

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Rpc {
        service: m.parent_service().name().to_owned(),
        name: m.name().to_owned(),
        full_name,
        input: input.name().to_owned(),
        output: output_name,
        method,
        path,
        body: has_body,
        query,
        required,
        sensitive,
        secret_response,
        nested_required,
        mutating: method != "GET",
    })
}

/// The `{field}` names of a template; other template syntax is refused.
fn path_params(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!("path template {path:?} must start with '/'"));
    }
    let mut params = Vec::new();
    for segment in path.split('/').skip(1) {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let plain = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !plain {
                return Err(format!(
                    "path segment {segment:?}: only literal segments and whole-segment `{{field}}` variables are supported"
                ));
            }
            params.push(name.to_owned());
        } else if segment.contains(['{', '}', '*', ':']) || segment.is_empty() {
            return Err(format!(
                "path segment {segment:?}: only literal segments and whole-segment `{{field}}` variables are supported"
            ));
        }
    }
    Ok(params)
}

/// Appends to `out` the checks of the `REQUIRED` fields inside the message
/// field `f` of `parent` (`(rust expression, path format, path args)`), at
/// any depth; top-level fields are checked by the serialization pass.
fn nested_checks(
    ann: &Annotations,
    f: &FieldDescriptor,
    parent: (&str, &str, Vec<String>),
    depth: usize,
    out: &mut String,
    fail: &mut impl FnMut(String),
) {
    let Kind::Message(message) = f.kind() else {
        return;
    };
    if f.is_map() || message.full_name().starts_with("google.protobuf.") || depth > 4 {
        return;
    }
    let (expr, path, mut args) = parent;
    let item = format!("item{depth}");
    let mut path = format!("{path}{}", f.name());
    let mut body = String::new();
    if f.is_list() {
        path.push_str("[{}]");
        args.push(format!("i{depth}"));
    }
    path.push('.');
    for inner in message.fields() {
        if ann.required(&inner) {
            let name = inner.name();
            let rust = rust_field(name);
            let missing = if inner.is_list() || inner.is_map() {
                format!("{item}.{rust}.is_empty()")
            } else if inner.supports_presence() {
                format!("{item}.{rust}.is_none()")
            } else {
                match inner.kind() {
                    Kind::String | Kind::Bytes => format!("{item}.{rust}.is_empty()"),
                    Kind::Enum(_) => format!("{item}.{rust} == 0"),
                    _ => {
                        fail(format!(
                            "REQUIRED field {}.{name} has no presence, so a missing value would be sent as 0: declare it `optional`",
                            message.name()
                        ));
                        continue;
                    }
                }
            };
            let field_path = format!("{path}{name}");
            let args = args.iter().map(|a| format!(", {a}")).collect::<String>();
            let _ = writeln!(
                body,
                "if {missing} {{ let field = format!({field_path:?}{args}); out.push(crate::translate::FieldViolation::new(&field, format!(\"{{field}} is required\"))); }}"
            );
        }
        nested_checks(
            ann,
            &inner,
            (&item, &path, args.clone()),
            depth + 1,
            &mut body,
            fail,
        );
    }
    if body.is_empty() {
        return;
    }
    let rust = rust_field(f.name());
    if f.is_list() {
        let _ = writeln!(
            out,
            "for (i{depth}, {item}) in {expr}.{rust}.iter().enumerate() {{\n{body}}}"
        );
    } else {
        let _ = writeln!(out, "if let Some({item}) = &{expr}.{rust} {{\n{body}}}");
    }
}

/// Names of the fields marked sensitive anywhere in `message`.
fn secret_fields(
    ann: &Annotations,
    message: &MessageDescriptor,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<String>,
) {
    if !seen.insert(message.full_name().to_owned()) {
        return;
    }
    for f in message.fields() {
        if ann.sensitive(&f) {
            if !out.iter().any(|n| n == f.name()) {
                out.push(f.name().to_owned());
            }
            continue;
        }
        if let Kind::Message(inner) = f.kind() {
            if !inner.full_name().starts_with("google.protobuf.") {
                secret_fields(ann, &inner, seen, out);
            }
        }
    }
}

/// A proto field name as prost spells the Rust field (`type` → `r#type`).
pub(crate) fn rust_field(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else",
        "enum", "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod",
        "move", "mut", "pub", "ref", "return", "static", "struct", "trait", "true", "type",
        "unsafe", "use", "where", "while", "yield",
    ];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_owned()
    }
}
