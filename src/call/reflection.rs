//! Server reflection (v1): list services, fetch the descriptors of one.

use std::collections::HashMap;

use anyhow::{anyhow, Context as _};
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorProto;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

use super::{describe, hint, request, CallOptions};

async fn ask(
    channel: Channel,
    opts: &CallOptions,
    message: MessageRequest,
) -> anyhow::Result<MessageResponse> {
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let mut stream = client
        .server_reflection_info(request(tokio_stream::iter([req]), opts)?)
        .await
        .map_err(|s| anyhow!("reflection refused: {}{}", describe(&s), hint(&s, opts)))?
        .into_inner();
    let resp = stream
        .next()
        .await
        .ok_or_else(|| anyhow!("reflection: no answer"))?
        .map_err(|s| anyhow!("reflection: {}{}", describe(&s), hint(&s, opts)))?;
    match resp.message_response {
        Some(MessageResponse::ErrorResponse(e)) => Err(anyhow!("reflection: {}", e.error_message)),
        Some(other) => Ok(other),
        None => Err(anyhow!("reflection: empty answer")),
    }
}

pub(super) async fn list_services(
    channel: Channel,
    opts: &CallOptions,
) -> anyhow::Result<Vec<String>> {
    match ask(channel, opts, MessageRequest::ListServices(String::new())).await? {
        MessageResponse::ListServicesResponse(list) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            Ok(names)
        }
        _ => Err(anyhow!("reflection: unexpected answer to ListServices")),
    }
}

/// The descriptors of `symbol`'s file and everything it imports, fetching
/// imports the server did not volunteer by file name.
pub(super) async fn pool_for(
    channel: Channel,
    opts: &CallOptions,
    symbol: &str,
) -> anyhow::Result<DescriptorPool> {
    let mut files: HashMap<String, FileDescriptorProto> = HashMap::new();
    let first = ask(
        channel.clone(),
        opts,
        MessageRequest::FileContainingSymbol(symbol.to_string()),
    )
    .await?;
    add_files(&mut files, first, symbol)?;
    // The well-known types are compiled in; everything else comes from the server.
    let known = DescriptorPool::global();
    loop {
        let missing: Vec<String> = files
            .values()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !files.contains_key(*d) && known.get_file_by_name(d).is_none())
            .cloned()
            .collect();
        let Some(name) = missing.into_iter().next() else {
            break;
        };
        let resp = ask(
            channel.clone(),
            opts,
            MessageRequest::FileByFilename(name.clone()),
        )
        .await?;
        add_files(&mut files, resp, &name)?;
        if !files.contains_key(&name) {
            return Err(anyhow!("reflection: the server does not know {name}"));
        }
    }
    let mut pool = DescriptorPool::new();
    let mut added = std::collections::HashSet::new();
    fn add(
        name: &str,
        files: &HashMap<String, FileDescriptorProto>,
        known: &DescriptorPool,
        pool: &mut DescriptorPool,
        added: &mut std::collections::HashSet<String>,
    ) -> anyhow::Result<()> {
        if !added.insert(name.to_string()) {
            return Ok(());
        }
        let file = match files.get(name) {
            Some(f) => f.clone(),
            None => known
                .get_file_by_name(name)
                .map(|f| f.file_descriptor_proto().clone())
                .ok_or_else(|| anyhow!("reflection: missing {name}"))?,
        };
        for dep in &file.dependency {
            add(dep, files, known, pool, added)?;
        }
        pool.add_file_descriptor_proto(file)
            .context("reflection: inconsistent descriptors")?;
        Ok(())
    }
    for name in files.keys() {
        add(name, &files, &known, &mut pool, &mut added)?;
    }
    Ok(pool)
}

fn add_files(
    files: &mut HashMap<String, FileDescriptorProto>,
    resp: MessageResponse,
    what: &str,
) -> anyhow::Result<()> {
    let MessageResponse::FileDescriptorResponse(found) = resp else {
        return Err(anyhow!("reflection: unexpected answer for {what}"));
    };
    for bytes in found.file_descriptor_proto {
        let file =
            FileDescriptorProto::decode(bytes.as_slice()).context("reflection: bad descriptor")?;
        files.insert(file.name().to_string(), file);
    }
    Ok(())
}
