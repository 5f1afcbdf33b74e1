//! How an `imprint.v2` answer goes on the wire.
//!
//! A call's answer is either a message decoded for this call, or — when
//! the response cache answered — the entry's message as it was encoded once
//! for every hit after the first ([`Reply::Encoded`]), so a hit costs a copy
//! of bytes instead of a clone of the message, its encoding and its drop.
//! The bytes are prost's encoding of the same message, so what a caller
//! receives does not change; compression and size limits apply as before.
//!
//! Every `imprint.v2` service is registered as a [`ReplyServer`] named after
//! its tonic-generated server (health, reflection and the router use the
//! name); the generated `serve_reply` dispatch serves each method with the
//! codec settings the generated servers had. The generated servers
//! themselves are never built.

use std::{convert::Infallible, marker::PhantomData};

use bytes::{BufMut as _, Bytes};
use futures::future::BoxFuture;
use prost::Message;
use tonic::{
    codec::{Codec, CompressionEncoding, EncodeBuf, Encoder},
    server::{Grpc, NamedService, UnaryService},
    Request, Response, Status,
};
use tonic_prost::ProstDecoder;

use super::Gateway;
use crate::translate::Endpoint;

/// An answer: a message, or a message already encoded (a cached answer).
#[derive(Clone)]
pub enum Reply<M> {
    Message(M),
    Encoded(Bytes),
}

/// The message's own (redacted) `Debug`; encoded bytes by their length only.
impl<M: std::fmt::Debug> std::fmt::Debug for Reply<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Reply::Encoded(b) => write!(f, "Encoded({} bytes)", b.len()),
        }
    }
}

impl<M: Message + Default> Reply<M> {
    /// The message itself (decoding the shared bytes if that is the form).
    pub fn into_message(self) -> Result<M, Status> {
        match self {
            Reply::Message(m) => Ok(m),
            Reply::Encoded(bytes) => M::decode(bytes)
                .map_err(|e| Status::internal(format!("re-reading a cached answer: {e}"))),
        }
    }
}

/// The codec settings of every `imprint.v2` method.
#[derive(Debug, Clone, Copy)]
pub struct GrpcConfig {
    pub max_decoding: usize,
    pub max_encoding: usize,
}

/// What [`unary`] returns.
pub type ReplyFuture = BoxFuture<'static, Result<http::Response<tonic::body::Body>, Infallible>>;

/// Serves one unary call of `E` with `gateway`: prost decodes the request,
/// [`ReplyEncoder`] writes the answer; gzip both ways as the generated
/// servers were configured.
pub fn unary<E>(
    gateway: Gateway,
    config: GrpcConfig,
    req: http::Request<tonic::body::Body>,
) -> ReplyFuture
where
    E: Endpoint + Message + Default,
{
    Box::pin(async move {
        let mut grpc = Grpc::new(ReplyCodec::<E::Response, E>(PhantomData))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(config.max_decoding)
            .max_encoding_message_size(config.max_encoding);
        Ok(grpc.unary(Method::<E>(gateway, PhantomData), req).await)
    })
}

/// One method: [`Gateway::call_reply`].
struct Method<E>(Gateway, PhantomData<fn() -> E>);

impl<E> UnaryService<E> for Method<E>
where
    E: Endpoint,
{
    type Response = Reply<E::Response>;
    type Future = BoxFuture<'static, Result<Response<Reply<E::Response>>, Status>>;

    fn call(&mut self, request: Request<E>) -> Self::Future {
        let gateway = self.0.clone();
        Box::pin(async move { gateway.call_reply(request).await })
    }
}

/// Decodes `R` with prost; encodes a [`Reply`] of `M`.
struct ReplyCodec<M, R>(PhantomData<fn() -> (M, R)>);

impl<M, R> Codec for ReplyCodec<M, R>
where
    M: Message + Send + 'static,
    R: Message + Default + Send + 'static,
{
    type Encode = Reply<M>;
    type Decode = R;
    type Encoder = ReplyEncoder<M>;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        ReplyEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Encodes a message with prost, or copies the bytes it was encoded to.
pub struct ReplyEncoder<M>(PhantomData<fn() -> M>);

impl<M: Message> Encoder for ReplyEncoder<M> {
    type Item = Reply<M>;
    type Error = Status;

    fn encode(&mut self, item: Reply<M>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Reply::Message(m) => m
                .encode(dst)
                .map_err(|e| Status::internal(format!("encoding the answer: {e}"))),
            Reply::Encoded(bytes) => {
                dst.put_slice(&bytes);
                Ok(())
            }
        }
    }
}

/// The `imprint.v2` service named like the generated server `S` (a type
/// only: never built): every method through [`serve_reply`](super::serve_reply)
/// and [`unary`]; any other path under the service is UNIMPLEMENTED.
pub struct ReplyServer<S> {
    gateway: Gateway,
    config: GrpcConfig,
    named_like: PhantomData<fn() -> S>,
}

impl<S> ReplyServer<S> {
    pub fn new(gateway: Gateway, config: GrpcConfig) -> Self {
        Self {
            gateway,
            config,
            named_like: PhantomData,
        }
    }
}

impl<S> Clone for ReplyServer<S> {
    fn clone(&self) -> Self {
        Self::new(self.gateway.clone(), self.config)
    }
}

impl<S: NamedService> NamedService for ReplyServer<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for ReplyServer<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ReplyFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> ReplyFuture {
        match super::serve_reply(&self.gateway, self.config, req) {
            Ok(fut) => fut,
            Err(req) => {
                let status = Status::unimplemented(format!("no method {}", req.uri().path()));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::imprint::v2::{Address, Customer};

    #[test]
    fn shared_bytes_read_back_as_the_message() {
        let customer = Customer {
            id: "c-1".into(),
            email: Some("a@example.com".into()),
            address: Some(Address {
                city: Some("Paris".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let shared = Reply::<Customer>::Encoded(customer.encode_to_vec().into());
        assert_eq!(shared.into_message().unwrap(), customer);
        let garbled = Reply::<Customer>::Encoded(Bytes::from_static(b"\xff\xff"));
        assert_eq!(
            garbled.into_message().unwrap_err().code(),
            tonic::Code::Internal
        );
    }
}
