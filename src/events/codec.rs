//! Subscribe on the wire. Each event is encoded and framed for gRPC once
//! ([`StoredEvent::framed`]), and every subscriber's response body hands
//! those shared bytes to HTTP/2 as they are: no buffer per subscriber. tonic's
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
            let mut status = Status::unimplemented(format!(
                "Content is compressed with `{encoding}` which isn't supported"
            ));
            status.metadata_mut().insert(
                "grpc-accept-encoding",
                tonic::metadata::MetadataValue::from_static("identity"),
            );
            return Err(status);
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

/// The answer to a Subscribe call whose events are `events`. Events ready
/// together are gathered into one chunk only as far as `events`'s
/// `size_hint` lower bound counts them ready right after one is handed out
/// (as [`super::subscribe`]'s stream does); a stream whose lower bound is 0
/// sends each event as its own chunk.
pub fn response<S>(events: S, max_message: Option<usize>) -> http::Response<tonic::body::Body>
where
    S: Stream<Item = Result<Arc<StoredEvent>, Status>> + Unpin + Send + 'static,
{
    let body = EventFrames {
        events,
        max_message: max_message.unwrap_or(usize::MAX),
        ending: None,
        ended: false,
    };
    // Boxed as tonic's body boxes, so that `Body::new` takes it as it is
    // instead of wrapping it in one more layer that every event goes through.
    let body = http_body_util::BodyExt::boxed_unsync(body);
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// About how much one body chunk gathers when several events are ready at
/// once (a history page, a burst committed together): tonic's own yield
/// threshold. h2 cuts a chunk into frames of at most 16 KiB.
const GATHER: usize = 32 << 10;

/// A Subscribe response body: each event's shared frame, then the status
/// (OK when the events end, or the error that ended them) as trailers.
/// An event alone goes out as its shared bytes; events that are ready
/// together (a history page, or several committed at once; the stream's
/// `size_hint` says how many) are copied into one chunk.
struct EventFrames<S> {
    events: S,
    max_message: usize,
    /// How the call ends, once known but not yet sent.
    ending: Option<Status>,
    ended: bool,
}

impl<S> EventFrames<S>
where
    S: Stream<Item = Result<Arc<StoredEvent>, Status>> + Unpin,
{
    /// The next event's frame, `Err` with how the call ends instead.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, Status>> {
        Poll::Ready(match ready!(Pin::new(&mut self.events).poll_next(cx)) {
            Some(Ok(event)) => {
                let framed = event.framed();
                let len = framed.len() - 5;
                if len > self.max_message || u32::try_from(len).is_err() {
                    Err(Status::out_of_range(format!(
                        "Error, encoded message length too large: found {len} bytes, the limit is: {} bytes",
                        self.max_message.min(u32::MAX as usize)
                    )))
                } else {
                    Ok(framed)
                }
            }
            Some(Err(status)) => Err(status),
            None => Err(Status::ok("")),
        })
    }

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
        if let Some(status) = this.ending.take() {
            return this.end(&status);
        }
        let first = match ready!(this.poll_event(cx)) {
            Ok(frame) => frame,
            Err(status) => return this.end(&status),
        };
        // More ready now (a history page, a burst of live events): one
        // chunk, copied together. A live event with nothing newer behind
        // it (the stream's size hint) goes out as its shared bytes without
        // polling the feed again.
        let mut gathered: Option<BytesMut> = None;
        while this.events.size_hint().0 > 0
            && gathered.as_ref().map_or(first.len(), BytesMut::len) < GATHER
        {
            match this.poll_event(cx) {
                Poll::Ready(Ok(frame)) => gathered
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&frame),
                Poll::Ready(Err(status)) => {
                    this.ending = Some(status);
                    break;
                }
                Poll::Pending => break,
            }
        }
        let data = gathered.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
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
        assert_eq!(pb::Event::decode(framed.slice(5..)).unwrap(), stored.event);
        assert_eq!(stored.event.cursor, "42");
    }

    #[tokio::test]
    async fn a_live_event_is_its_shared_bytes_and_history_is_gathered() {
        use futures::StreamExt as _;
        let (a, b, c) = (stored(1), stored(2), stored(3));
        // One event, then nothing yet: its frame is the shared bytes.
        let live = futures::stream::iter([Ok(a.clone())]).chain(futures::stream::pending());
        let mut body = response(live, None).into_body();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.as_ptr(), a.framed().as_ptr(), "copied");
        // Ready together: one frame, in order.
        let history = futures::stream::iter([Ok(a.clone()), Ok(b.clone()), Ok(c.clone())]);
        let mut body = response(history, None).into_body();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame, [a.framed(), b.framed(), c.framed()].concat());
        let end = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(end["grpc-status"], "0");
        assert!(body.frame().await.is_none());
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
        assert_eq!(
            gzip.metadata().get("grpc-accept-encoding").unwrap(),
            "identity"
        );
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
