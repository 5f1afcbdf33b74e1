//! Compiles `proto/` with protox (pure Rust: no system `protoc` needed) and
//! tonic-prost-build, and derives from the descriptors themselves:
//!
//! - the REST JSON mapping of every `imprint.v2` message: the JSON names are
//!   the proto field names (the contract), so each field gets a lenient
//!   deserializer chosen by its kind (unknown enum values become
//!   UNSPECIFIED, malformed values are left unset) and a serializer that
//!   omits unset fields; each enum gets its REST spelling (the value name
//!   without the enum's prefix);
//! - the route table (`routes.rs`): one `Endpoint` and `serve_reply` arm per RPC,
//!   from `google.api.http`, `google.api.field_behavior` and
//!   `imprint.gateway.v1.sensitive` (see `src/translate/generate.rs`
//!   and `generate_render.rs`);
//! - the redacted `Debug` of every message with a sensitive field.
//!
//! A missing or inconsistent annotation fails the build with the RPC's name.

#[path = "src/translate/generate.rs"]
mod generate;
#[path = "src/translate/generate_render.rs"]
mod generate_render;

use std::{fmt::Write as _, path::PathBuf};

use prost_types::{
    field_descriptor_proto::{Label, Type},
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
};

/// `imprint.v2` services served by hand rather than by the generated
/// `Gateway` impl: `KeyService` applies the gateway's key policy (which key
/// authenticates a DeleteKey, refusing the key in use) before its call.
const HAND_SERVED: &[&str] = &["KeyService"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["proto/imprint/v2", "proto/imprint/gateway/v1"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "proto") {
                files.push(path);
            }
        }
    }
    files.sort();
    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    let fds = compiler.file_descriptor_set();
    let pool = compiler.descriptor_pool();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by reflection: the encoded form keeps the annotations (extension
    // options), which the prost_types structs would drop.
    std::fs::write(
        out.join("imprint_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let rpcs = generate::rpcs(&pool, "imprint.v2").map_err(annotation_errors)?;
    std::fs::write(
        out.join("routes.rs"),
        generate_render::render_routes(&rpcs, "crate::pb::imprint::v2", HAND_SERVED),
    )?;
    let (redacted, debug) =
        generate_render::render_redacted_debug(&pool, "imprint.v2").map_err(annotation_errors)?;
    std::fs::write(out.join("redacted_debug.rs"), debug)?;

    let mut builder = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(redacted);
    let mut enums = String::new();
    for file in fds.file.iter().filter(|f| f.package() == "imprint.v2") {
        for message in &file.message_type {
            builder = derive_json(builder, &fds, message);
        }
        for e in &file.enum_type {
            rest_enum(&mut enums, e);
        }
    }
    std::fs::write(out.join("rest_enums.rs"), enums)?;
    builder.compile_fds(fds)?;
    Ok(())
}

/// Prints every broken annotation, one per line (each names its RPC or
/// message), and fails the build.
fn annotation_errors(errors: Vec<String>) -> Box<dyn std::error::Error> {
    for e in &errors {
        eprintln!("error: {e}");
    }
    format!(
        "{} inconsistent proto annotation(s), listed above",
        errors.len()
    )
    .into()
}

/// Adds serde derives and one attribute per field of `.imprint.v2.<message>`.
fn derive_json(
    mut builder: tonic_prost_build::Builder,
    fds: &FileDescriptorSet,
    message: &DescriptorProto,
) -> tonic_prost_build::Builder {
    let path = format!(".imprint.v2.{}", message.name());
    builder = builder.type_attribute(
        &path,
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
    );
    for field in &message.field {
        let attr = field_attr(fds, message, field);
        builder = builder.field_attribute(format!("{path}.{}", field.name()), attr);
    }
    builder
}

/// The serde attribute of one field, chosen by its kind.
fn field_attr(
    fds: &FileDescriptorSet,
    message: &DescriptorProto,
    f: &FieldDescriptorProto,
) -> String {
    let de = "crate::json::de";
    let ser = "crate::json::ser";
    let repeated = f.label() == Label::Repeated;
    let optional = f.proto3_optional();
    let type_name = f.type_name().trim_start_matches('.');

    if repeated {
        if let Some(entry) = map_entry(message, f) {
            let value = &entry.field[1];
            return match value.r#type() {
                Type::String => format!(
                    "#[serde(deserialize_with = \"{de}::string_map\", skip_serializing_if = \"std::collections::HashMap::is_empty\")]"
                ),
                Type::Enum => {
                    let e = rust_name(value.type_name());
                    format!(
                        "#[serde(deserialize_with = \"{de}::enum_map::<{e}, _>\", serialize_with = \"{ser}::enum_map::<{e}, _>\", skip_serializing_if = \"std::collections::HashMap::is_empty\")]"
                    )
                }
                other => panic!("map value type {other:?} in {} has no JSON mapping", f.name()),
            };
        }
        return match f.r#type() {
            Type::Message => format!(
                "#[serde(deserialize_with = \"{de}::messages\", skip_serializing_if = \"Vec::is_empty\")]"
            ),
            other => panic!("repeated {other:?} field {} has no JSON mapping", f.name()),
        };
    }
    match f.r#type() {
        Type::Message => match type_name {
            "google.protobuf.Timestamp" => format!(
                "#[serde(deserialize_with = \"{de}::timestamp\", serialize_with = \"{ser}::timestamp\", skip_serializing_if = \"Option::is_none\")]"
            ),
            "google.protobuf.Struct" => format!(
                "#[serde(deserialize_with = \"{de}::structure\", serialize_with = \"{ser}::structure\", skip_serializing_if = \"Option::is_none\")]"
            ),
            _ => {
                assert!(
                    fds.file.iter().any(|file| file.package() == "imprint.v2"),
                    "unknown message type {type_name}"
                );
                format!("#[serde(deserialize_with = \"{de}::message\", skip_serializing_if = \"Option::is_none\")]")
            }
        },
        Type::Enum => {
            let e = rust_name(f.type_name());
            format!(
                "#[serde(deserialize_with = \"{de}::enumeration::<{e}, _>\", serialize_with = \"{ser}::enumeration::<{e}, _>\", skip_serializing_if = \"{ser}::is_unspecified\")]"
            )
        }
        scalar => {
            let kind = match scalar {
                Type::String => "string",
                Type::Int64 => "int64",
                Type::Int32 => "int32",
                Type::Bool => "boolean",
                other => panic!("field {} of type {other:?} has no JSON mapping", f.name()),
            };
            if optional {
                format!("#[serde(deserialize_with = \"{de}::opt_{kind}\", skip_serializing_if = \"Option::is_none\")]")
            } else if scalar == Type::String {
                format!("#[serde(deserialize_with = \"{de}::{kind}\", skip_serializing_if = \"String::is_empty\")]")
            } else {
                format!("#[serde(deserialize_with = \"{de}::{kind}\")]")
            }
        }
    }
}

/// The synthetic map-entry message behind a `map<...>` field, if it is one.
fn map_entry<'a>(
    message: &'a DescriptorProto,
    f: &FieldDescriptorProto,
) -> Option<&'a DescriptorProto> {
    let entry = f.type_name().rsplit('.').next()?;
    message
        .nested_type
        .iter()
        .find(|n| n.name() == entry && n.options.as_ref().is_some_and(|o| o.map_entry()))
}

/// `.imprint.v2.PaymentMethodType` → `PaymentMethodType` (same module).
fn rust_name(type_name: &str) -> String {
    let name = type_name.rsplit('.').next().unwrap_or(type_name);
    assert!(
        type_name.starts_with(".imprint.v2."),
        "enum {type_name} outside imprint.v2"
    );
    name.to_string()
}

/// `impl RestEnum`: REST value = proto value name minus the enum's prefix.
fn rest_enum(out: &mut String, e: &prost_types::EnumDescriptorProto) {
    let name = e.name();
    let prefix = format!("{}_", upper_snake(name));
    let mut from = String::new();
    let mut to = String::new();
    for v in &e.value {
        let rest = v
            .name()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{} lacks prefix {prefix}", v.name()));
        if rest == "UNSPECIFIED" {
            continue;
        }
        let variant = camel(rest);
        writeln!(from, "            {rest:?} => Some(Self::{variant}),").unwrap();
        writeln!(to, "            Self::{variant} => {rest:?},").unwrap();
    }
    writeln!(
        out,
        "impl crate::json::RestEnum for {name} {{
    fn from_rest(value: &str) -> Option<Self> {{
        match value {{
{from}            _ => None,
        }}
    }}
    fn rest_name(self) -> &'static str {{
        match self {{
            Self::Unspecified => \"\",
{to}        }}
    }}
}}"
    )
    .unwrap();
}

fn upper_snake(camel: &str) -> String {
    let mut s = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s
}

fn camel(upper_snake: &str) -> String {
    upper_snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}
