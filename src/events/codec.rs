//! Subscribe on the wire. Each event is encoded and framed for gRPC once
//! ([`StoredEvent::framed`]), and every subscriber's response body hands
//! those shared bytes to HTTP/2 as they are: no copy per subscriber. tonic's
//! server streaming would copy each message into a per-stream buffer, so
//! this module answers Subscribe itself: the request decoded by tonic's
//! `Streaming` (the same limits and errors as a generated server without
//! compression), the answer `content-type: application/grpc`, the events as
//! DATA frames and the call's end as `grpc-status` trailers — what a
//! generated server sends for the same stream.

use std::{
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::Stream;
use http_body::Frame;
use tonic::{codec::Streaming, Status};
use tonic_prost::ProstDecoder;

use super::{log::StoredEvent, pb::SubscribeRequest};

/// `message` encoded as one gRPC length-prefixed message (uncompressed).
pub fn frame<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Cannot fail: the buffer has the room.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// The Subscribe request of `req`, decoded as a generated server would:
/// one message within `max` bytes (tonic's default when `None`), and no
/// compression (this server accepts none).
pub async fn request<B>(
    req: http::Request<B>,
    max: Option<usize>,
) -> Result<SubscribeRequest, Status>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send,
{
    if let Some(encoding) = req.headers().get("grpc-encoding") {
        if encoding.as_bytes() != b"identity" {
            let encoding = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
            return Err(Status::unimplemented(format!(
                "Content is compressed with `{encoding}` which isn't supported"
            )));
        }
    }
    let mut stream = Streaming::new_request(
        ProstDecoder::<SubscribeRequest>::default(),
        req.into_body(),
        None,
        max,
    );
    stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing request message."))
}

/// The answer to a Subscribe call whose events are `events`.
pub fn response<S>(events: S, max_message: Option<usize>) -> http::Response<tonic::body::Body>
where
    S: Stream<Item = Result<Arc<StoredEvent>, Status>> + Unpin + Send + 'static,
{
    let body = EventFrames {
        events,
        max_message: max_message.unwrap_or(usize::MAX),
        ended: false,
    };
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A Subscribe response body: each event's shared frame, then the status
/// (OK when the events end, or the error that ended them) as trailers.
struct EventFrames<S> {
    events: S,
    max_message: usize,
    ended: bool,
}

impl<S> EventFrames<S> {
    fn end(&mut self, status: &Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        Poll::Ready(Some(
            status
                .add_header(&mut trailers)
                .map(|()| Frame::trailers(trailers)),
        ))
    }
}

impl<S> http_body::Body for EventFrames<S>
where
    S: Stream<Item = Result<Arc<StoredEvent>, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.events).poll_next(cx)) {
            Some(Ok(event)) => {
                let framed = event.framed();
                let len = framed.len() - 5;
                if len > this.max_message {
                    return this.end(&Status::out_of_range(format!(
                        "Error, encoded message length too large: found {len} bytes, the limit is: {} bytes",
                        this.max_message
                    )));
                }
                Poll::Ready(Some(Ok(Frame::data(framed))))
            }
            Some(Err(status)) => this.end(&status),
            None => this.end(&Status::ok("")),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use prost::Message as _;

    use super::*;
    use crate::events::pb;

    fn stored(cursor: u64) -> Arc<StoredEvent> {
        let event = pb::Event {
            event_id: format!("ev-{cursor}"),
            kind: pb::EventKind::Transaction as i32,
            raw_json: r#"{"object":"TRANSACTION"}"#.into(),
            ..Default::default()
        };
        Arc::new(StoredEvent::new(cursor, event))
    }

    #[test]
    fn shared_frame_is_the_message_prost_would_send() {
        let stored = stored(42);
        let framed = stored.framed();
        let message = stored.event.encode_to_vec();
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(
            &framed[1..5],
            &u32::try_from(message.len()).unwrap().to_be_bytes()
        );
        assert_eq!(&framed[5..], &message[..]);
        assert_eq!(stored.encoded(), message);
        assert_eq!(pb::Event::decode(stored.encoded()).unwrap(), stored.event);
        assert_eq!(stored.event.cursor, "42");
    }

    #[tokio::test]
    async fn request_is_one_uncompressed_message() {
        let sent = SubscribeRequest {
            customer_id: Some("c_1".into()),
            ..Default::default()
        };
        let req = |encoding: Option<&str>, body: Bytes| {
            let mut req = http::Request::new(http_body_util::Full::new(body));
            if let Some(e) = encoding {
                req.headers_mut()
                    .insert("grpc-encoding", e.parse().unwrap());
            }
            req
        };
        let got = request(req(None, frame(&sent)), None).await.unwrap();
        assert_eq!(got, sent);
        let got = request(req(Some("identity"), frame(&sent)), None)
            .await
            .unwrap();
        assert_eq!(got, sent);
        let gzip = request(req(Some("gzip"), frame(&sent)), None)
            .await
            .unwrap_err();
        assert_eq!(gzip.code(), tonic::Code::Unimplemented);
        let too_big = request(req(None, frame(&sent)), Some(2)).await.unwrap_err();
        assert_eq!(too_big.code(), tonic::Code::OutOfRange);
        let none = request(req(None, Bytes::new()), None).await.unwrap_err();
        assert_eq!(none.code(), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn body_is_the_frames_then_the_status_as_trailers() {
        let (a, b) = (stored(1), stored(2));
        let events = futures::stream::iter([Ok(a.clone()), Ok(b.clone())]);
        let collected = response(events, None).into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        let mut expected = a.framed().to_vec();
        expected.extend_from_slice(&b.framed());
        assert_eq!(collected.to_bytes(), expected);

        let ended = futures::stream::iter([
            Ok(a.clone()),
            Err(Status::resource_exhausted("slow; resume after cursor 1")),
        ]);
        let collected = response(ended, None).into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "8");
        assert_eq!(
            trailers["grpc-message"],
            "slow;%20resume%20after%20cursor%201"
        );
        assert_eq!(collected.to_bytes(), a.framed());

        let too_big = futures::stream::iter([Ok(a.clone())]);
        let collected = response(too_big, Some(4))
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "11");
        assert!(collected.to_bytes().is_empty());
    }
}
