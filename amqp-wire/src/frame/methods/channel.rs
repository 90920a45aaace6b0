//! The `channel` class (20).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ReplyCode;
use crate::frame::method::Args;
use crate::frame::wire::{
    PResult, bit, flag, long_str, octet, put_long_bytes, put_short_str, short, short_str,
    short_str_len,
};
use crate::types::ShortStr;

/// `channel.open`: open a channel. Its one argument, `out-of-band`, is reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelOpen;

impl Args for ChannelOpen {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _out_of_band) = short_str(src, i)?;
        Ok((i, Self))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &ShortStr::new());
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `channel.open-ok`: the channel is open. Its one argument, `channel-id`, is reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelOpenOk;

impl Args for ChannelOpenOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _channel_id) = long_str(src, i)?;
        Ok((i, Self))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_long_bytes(dst, &[]);
    }
    fn encoded_len(&self) -> usize {
        4
    }
}

const ACTIVE: u8 = 0x01;

/// `channel.flow`: ask the peer to pause (`active = false`) or resume sending content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelFlow {
    /// True to resume, false to pause.
    pub active: bool,
}

impl Args for ChannelFlow {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                active: bit(bits, ACTIVE),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(flag(self.active, ACTIVE));
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `channel.flow-ok`: confirms a `channel.flow`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelFlowOk {
    /// The flow state now in force.
    pub active: bool,
}

impl Args for ChannelFlowOk {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                active: bit(bits, ACTIVE),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(flag(self.active, ACTIVE));
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `channel.close`: close the channel, naming the method that failed (or 0/0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelClose {
    /// Why: 200 for a normal close, otherwise a soft error code.
    pub reply_code: ReplyCode,
    /// A human-readable reason.
    pub reply_text: ShortStr,
    /// The class of the method that caused the close, or 0.
    pub class_id: u16,
    /// The method that caused the close, or 0.
    pub method_id: u16,
}

impl Default for ChannelClose {
    fn default() -> Self {
        Self {
            reply_code: ReplyCode::SUCCESS,
            reply_text: ShortStr::new(),
            class_id: 0,
            method_id: 0,
        }
    }
}

impl Args for ChannelClose {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, reply_code) = short(i)?;
        let (i, reply_text) = short_str(src, i)?;
        let (i, class_id) = short(i)?;
        let (i, method_id) = short(i)?;
        Ok((
            i,
            Self {
                reply_code: ReplyCode(reply_code),
                reply_text,
                class_id,
                method_id,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(self.reply_code.0);
        put_short_str(dst, &self.reply_text);
        dst.put_u16(self.class_id);
        dst.put_u16(self.method_id);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.reply_text) + 4
    }
}

/// `channel.close-ok`: confirms a `channel.close`; the channel number is free again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelCloseOk;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::method::Method;
    use crate::frame::methods::testing::round_trip;

    #[test]
    fn every_channel_method_round_trips() {
        round_trip(ChannelOpen.into());
        round_trip(ChannelOpenOk.into());
        round_trip(ChannelFlow { active: true }.into());
        round_trip(ChannelFlowOk { active: false }.into());
        round_trip(ChannelCloseOk.into());
        round_trip(
            ChannelClose {
                reply_code: ReplyCode::NOT_FOUND,
                reply_text: ShortStr::from_static("NOT_FOUND"),
                class_id: 50,
                method_id: 10,
            }
            .into(),
        );
    }

    #[test]
    fn channel_close_vector_18() {
        // test-vectors.md §18, payload only.
        let payload = Bytes::from_static(b"\x00\x14\x00\x28\x01\x94\x09NOT_FOUND\x00\x32\x00\x0a");
        let Ok(Method::ChannelClose(close)) = Method::decode(&payload) else {
            panic!("not a channel.close");
        };
        assert_eq!(close.reply_code, ReplyCode::NOT_FOUND);
        assert_eq!(close.reply_text, "NOT_FOUND");
        assert_eq!((close.class_id, close.method_id), (50, 10));
    }
}
