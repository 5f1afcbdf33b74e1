//! The Subscribe stream's codec: each event goes out as the bytes it was
//! encoded to once ([`StoredEvent::encoded`]), shared by every subscriber,
//! instead of a clone of the message encoded again per subscriber. The
//! bytes are prost's encoding of the same `imprint.gateway.v1.Event`, so
//! what a caller receives is unchanged; the request is decoded by prost.

use bytes::{BufMut as _, Bytes};
use tonic::{
    codec::{Codec, EncodeBuf, Encoder},
    Status,
};
use tonic_prost::ProstDecoder;

use super::pb::SubscribeRequest;

/// An `imprint.gateway.v1.Event`, already encoded.
#[derive(Debug, Clone)]
pub struct EncodedEvent(pub Bytes);

/// Decodes `SubscribeRequest` with prost; encodes [`EncodedEvent`] by copying.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeCodec;

impl Codec for SubscribeCodec {
    type Encode = EncodedEvent;
    type Decode = SubscribeRequest;
    type Encoder = EncodedEncoder;
    type Decoder = ProstDecoder<SubscribeRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes the shared bytes into tonic's frame buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = EncodedEvent;
    type Error = Status;

    fn encode(&mut self, item: EncodedEvent, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use crate::events::{log::StoredEvent, pb};

    #[test]
    fn shared_bytes_are_the_message_prost_would_send() {
        let event = pb::Event {
            event_id: "ev-1".into(),
            kind: pb::EventKind::Transaction as i32,
            raw_json: r#"{"object":"TRANSACTION"}"#.into(),
            ..Default::default()
        };
        let stored = StoredEvent::new(42, event);
        let bytes = stored.encoded();
        assert_eq!(bytes, stored.event.encode_to_vec());
        assert_eq!(pb::Event::decode(bytes).unwrap(), stored.event);
        assert_eq!(stored.event.cursor, "42");
    }
}
