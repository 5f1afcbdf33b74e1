//! `imprint-gateway call`: a small grpcurl-like client that needs nothing but
//! this repository. It learns the API from the server's reflection service,
//! takes a JSON request (REST field names), prints the JSON response, and on
//! error prints the gRPC status with its `google.rpc` details.

mod codec;
mod enums;
mod reflection;

use std::{str::FromStr, time::Duration};

use anyhow::{anyhow, bail, Context as _};
use prost_reflect::{DynamicMessage, MethodDescriptor, SerializeOptions};
use tonic::{
    metadata::{MetadataKey, MetadataValue},
    transport::{Channel, Endpoint},
};

/// What to call and how.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// `http://127.0.0.1:50051` or `127.0.0.1:50051`.
    pub addr: String,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Extra metadata, `name: value`.
    pub headers: Vec<String>,
    pub timeout: Duration,
    /// TLS to the gateway (`--ca`, `--cert`/`--key`); None: plaintext.
    pub tls: Option<CallTls>,
}

/// How `call` speaks TLS to a gateway with `GATEWAY_TLS_CERT_FILE`.
#[derive(Debug, Clone)]
pub struct CallTls {
    /// PEM CA certificate(s) the gateway's certificate must chain to.
    pub ca: std::path::PathBuf,
    /// PEM client certificate and key (mTLS: the caller's identity).
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The name the gateway's certificate must hold (default: the
    /// address's host).
    pub server_name: Option<String>,
}

async fn connect(opts: &CallOptions) -> anyhow::Result<Channel> {
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let uri = match opts.addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{}", opts.addr),
    };
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid address {uri}"))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = &opts.tls {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))
        };
        let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(read(&tls.ca, "--ca")?),
        );
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert, "--cert")?,
                read(key, "--key")?,
            ));
        }
        endpoint = endpoint.tls_config(config).context("TLS settings")?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {uri}{}", certificate_hint(opts)))
}

/// A status with what caused it: a transport error says why (a TLS alert,
/// a refused or closed connection).
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The likely reason a TLS connection without a client certificate was
/// lost: a gateway with a client CA requires one by default, and TLS 1.3
/// tells the client only by closing the connection.
fn certificate_hint(opts: &CallOptions) -> &'static str {
    if opts.tls.as_ref().is_some_and(|t| t.identity.is_none()) {
        " (no --cert/--key given: a gateway with GATEWAY_TLS_CLIENT_CA_FILE requires a client certificate unless configured otherwise)"
    } else {
        ""
    }
}

/// [`certificate_hint`] for a transport failure; nothing for an answer.
fn hint(status: &tonic::Status, opts: &CallOptions) -> &'static str {
    if std::error::Error::source(status).is_some() {
        certificate_hint(opts)
    } else {
        ""
    }
}

/// An answer from the server, or a transport failure told with its cause.
fn status_error(status: tonic::Status, opts: &CallOptions) -> CallError {
    if std::error::Error::source(&status).is_some() {
        CallError::Other(anyhow!("{}{}", describe(&status), hint(&status, opts)))
    } else {
        CallError::Status(status)
    }
}

fn request<T>(message: T, opts: &CallOptions) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(opts.timeout);
    with_metadata(req, opts)
}

fn with_metadata<T>(
    mut req: tonic::Request<T>,
    opts: &CallOptions,
) -> anyhow::Result<tonic::Request<T>> {
    let md = req.metadata_mut();
    if let Some(token) = &opts.token {
        md.insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}"))?,
        );
    }
    for h in &opts.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("header {h:?} is not 'name: value'"))?;
        md.insert(
            MetadataKey::from_str(&k.trim().to_ascii_lowercase())
                .with_context(|| format!("bad header name {k:?}"))?,
            MetadataValue::try_from(v.trim())
                .with_context(|| format!("bad header value for {k}"))?,
        );
    }
    Ok(req)
}

/// Lists services and their methods, one `service/Method` per line.
pub async fn list(opts: &CallOptions) -> anyhow::Result<String> {
    let channel = connect(opts).await?;
    let mut out = String::new();
    for service in reflection::list_services(channel.clone(), opts).await? {
        let pool = reflection::pool_for(channel.clone(), opts, &service).await?;
        let Some(desc) = pool.get_service_by_name(&service) else {
            continue;
        };
        for m in desc.methods() {
            let kind = if m.is_server_streaming() {
                " (stream)"
            } else {
                ""
            };
            out.push_str(&format!(
                "{service}/{}{kind}  {} -> {}\n",
                m.name(),
                m.input().name(),
                m.output().name()
            ));
        }
    }
    Ok(out)
}

/// A resolved call: channel, method, request message, path.
struct Prepared {
    channel: Channel,
    desc: MethodDescriptor,
    message: DynamicMessage,
    path: http::uri::PathAndQuery,
}

/// The standard health service, answered without a caller token.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

async fn prepare(opts: &CallOptions, method: &str, json: &str) -> Result<Prepared, CallError> {
    let channel = connect(opts).await.map_err(CallError::Other)?;
    let (service, name) = method.rsplit_once('/').ok_or_else(|| {
        CallError::Other(anyhow!(
            "method must be 'package.Service/Method', got {method:?}"
        ))
    })?;
    // The health service is open to everyone (orchestrators probe without a
    // token) but reflection is not: its descriptors are compiled in, so a
    // probe (the container image's HEALTHCHECK) needs no caller token.
    let pool = if service == HEALTH_SERVICE {
        prost_reflect::DescriptorPool::decode(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .map_err(|e| CallError::Other(anyhow!("health descriptors: {e}")))?
    } else {
        reflection::pool_for(channel.clone(), opts, service)
            .await
            .map_err(CallError::Other)?
    };
    let desc: MethodDescriptor = pool
        .get_service_by_name(service)
        .ok_or_else(|| CallError::Other(anyhow!("the server has no service {service}")))?
        .methods()
        .find(|m| m.name() == name)
        .ok_or_else(|| CallError::Other(anyhow!("{service} has no method {name}")))?;
    if desc.is_client_streaming() {
        return Err(CallError::Other(anyhow!(
            "{method} is a client-streaming method; call supports unary and server-streaming methods"
        )));
    }
    let json = if json.trim().is_empty() { "{}" } else { json };
    let mut value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| CallError::Other(anyhow!("the request is not valid JSON: {e}")))?;
    enums::rewrite(&desc.input(), &mut value, enums::Direction::ToProto);
    let message = DynamicMessage::deserialize(desc.input(), value).map_err(|e| {
        CallError::Other(anyhow!(
            "request JSON does not fit {}: {e}",
            desc.input().full_name()
        ))
    })?;

    let path = http::uri::PathAndQuery::try_from(format!("/{service}/{name}"))
        .map_err(|e| CallError::Other(anyhow!("bad method path: {e}")))?;
    Ok(Prepared {
        channel,
        desc,
        message,
        path,
    })
}

/// Whether `service/Method` is server streaming (per reflection).
pub async fn is_server_streaming(opts: &CallOptions, method: &str) -> Result<bool, CallError> {
    // Any problem is reported by the call itself.
    Ok(prepare(opts, method, "{}")
        .await
        .is_ok_and(|p| p.desc.is_server_streaming()))
}

/// The response as REST-style JSON.
fn to_json(
    desc: &MethodDescriptor,
    message: DynamicMessage,
) -> Result<serde_json::Value, CallError> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    let mut value = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CallError::Other(anyhow!("cannot print the response: {e}")))?;
    enums::rewrite(&desc.output(), &mut value, enums::Direction::ToRest);
    Ok(value)
}

/// Calls unary `service/Method` with a JSON request; returns the JSON response.
pub async fn call(opts: &CallOptions, method: &str, json: &str) -> Result<String, CallError> {
    let p = prepare(opts, method, json).await?;
    if p.desc.is_server_streaming() {
        return Err(CallError::Other(anyhow!(
            "{method} is server streaming: use call_streaming"
        )));
    }
    let mut grpc = tonic::client::Grpc::new(p.channel);
    grpc.ready().await.map_err(|e| {
        CallError::Other(anyhow!(
            "connection not ready: {e}{}",
            certificate_hint(opts)
        ))
    })?;
    let codec = codec::DynamicCodec::new(p.desc.output());
    let response = grpc
        .unary(
            request(p.message, opts).map_err(CallError::Other)?,
            p.path,
            codec,
        )
        .await
        .map_err(|s| status_error(s, opts))?;
    let value = to_json(&p.desc, response.into_inner())?;
    serde_json::to_string_pretty(&value)
        .map_err(|e| CallError::Other(anyhow!("cannot print the response: {e}")))
}

/// Calls server-streaming `service/Method`; hands each message, as one
/// line of compact JSON, to `each` as it arrives, until the server ends
/// the stream. No deadline: a subscription runs until ended or interrupted.
pub async fn call_streaming(
    opts: &CallOptions,
    method: &str,
    json: &str,
    mut each: impl FnMut(String),
) -> Result<(), CallError> {
    let p = prepare(opts, method, json).await?;
    let mut grpc = tonic::client::Grpc::new(p.channel);
    grpc.ready().await.map_err(|e| {
        CallError::Other(anyhow!(
            "connection not ready: {e}{}",
            certificate_hint(opts)
        ))
    })?;
    let codec = codec::DynamicCodec::new(p.desc.output());
    let req = with_metadata(tonic::Request::new(p.message), opts).map_err(CallError::Other)?;
    let mut stream = grpc
        .server_streaming(req, p.path, codec)
        .await
        .map_err(|s| status_error(s, opts))?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(|s| status_error(s, opts))? {
        let value = to_json(&p.desc, message)?;
        each(value.to_string());
    }
    Ok(())
}

/// A failed call: a gRPC status from the server, or a local problem.
#[derive(Debug)]
pub enum CallError {
    Status(tonic::Status),
    Other(anyhow::Error),
}

impl CallError {
    /// A readable report: code, message and each `google.rpc` detail.
    pub fn report(&self) -> String {
        match self {
            CallError::Other(e) => format!("error: {e:#}"),
            CallError::Status(s) => status_report(s),
        }
    }
}

fn status_report(s: &tonic::Status) -> String {
    use prost::Message as _;
    use std::fmt::Write as _;
    let mut out = format!(
        "ERROR:\n  Code: {:?}\n  Message: {}\n",
        s.code(),
        s.message()
    );
    if let Some(id) = s
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        let _ = writeln!(out, "  Request id: {id}");
    }
    let Ok(details) = tonic_types::pb::Status::decode(s.details()) else {
        return out;
    };
    for any in details.details {
        let name = any
            .type_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let text = match name.as_str() {
            "google.rpc.ErrorInfo" => {
                tonic_types::pb::ErrorInfo::decode(any.value.as_slice()).map(|e| {
                    format!(
                        "reason={} domain={} metadata={:?}",
                        e.reason, e.domain, e.metadata
                    )
                })
            }
            "google.rpc.BadRequest" => tonic_types::pb::BadRequest::decode(any.value.as_slice())
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| format!("{}: {}", v.field, v.description))
                        .collect::<Vec<_>>()
                        .join("; ")
                }),
            "google.rpc.RetryInfo" => {
                tonic_types::pb::RetryInfo::decode(any.value.as_slice()).map(|r| {
                    let d = r.retry_delay.unwrap_or_default();
                    format!("retry after {}.{:03}s", d.seconds, d.nanos / 1_000_000)
                })
            }
            "imprint.v2.CustomerLink" => {
                crate::pb::imprint::v2::CustomerLink::decode(any.value.as_slice())
                    .map(|l| serde_json::to_string(&l).unwrap_or_default())
            }
            _ => Ok(format!("{} bytes", any.value.len())),
        };
        let _ = writeln!(
            out,
            "  {name}: {}",
            text.unwrap_or_else(|e| format!("undecodable: {e}"))
        );
    }
    out
}

/// Fails when `json` is not a JSON object (`call`'s argument check).
pub fn check_json_argument(json: &str) -> anyhow::Result<()> {
    if json.trim().is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => bail!("the request must be a JSON object"),
        Err(e) => bail!("the request is not valid JSON: {e}"),
    }
}
