//! Frames: the 7-octet header, the four frame types, and encoding.
//!
//! ```text
//! +------+---------+---------+-----------------+------+
//! | type | channel |  size   |     payload     | 0xCE |
//! |  u8  |   u16   |   u32   |   size octets   |  u8  |
//! +------+---------+---------+-----------------+------+
//! ```

pub mod content;
pub(crate) mod method;
pub mod methods;
pub(crate) mod wire;

use bytes::{BufMut, Bytes, BytesMut};

use self::content::ContentHeader;
use self::method::Method;
use crate::types::ChannelId;

/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// The octets of a frame's header: type, channel, size.
pub const HEADER_LEN: usize = 7;
/// The octets a frame adds around its payload: the header and the end octet.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + 1;
/// The smallest `frame_max` a peer must accept, and the limit before `connection.tune`.
///
/// 4096 is `FRAME-MIN-SIZE` in the 0-9-1 XML (`amqp0-9-1.stripped.xml`); amq-protocol's JSON and
/// amqprs use 8192, which RabbitMQ adopted as its initial limit in 4.1.0. RabbitMQ 3.10 enforces
/// 4096 before tune, so a client must keep its first frames within 4096.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// The frame type octet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// A method (1).
    Method = 1,
    /// A content header (2).
    Header = 2,
    /// A piece of a content body (3).
    Body = 3,
    /// A heartbeat (8; the PDF's prose says 4, the XML and RabbitMQ say 8).
    Heartbeat = 8,
}

impl FrameType {
    /// The type for an octet, if it is one of the four.
    pub fn from_octet(octet: u8) -> Option<Self> {
        Some(match octet {
            1 => Self::Method,
            2 => Self::Header,
            3 => Self::Body,
            8 => Self::Heartbeat,
            _ => return None,
        })
    }

    /// The type's name, for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Header => "header",
            Self::Body => "body",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// One AMQP frame.
#[derive(Clone, Debug, PartialEq)]
// A content header (14 properties) is the largest variant. Boxing it would cost an allocation
// per delivery, and frames are moved once or twice, so the size is the better trade.
#[allow(clippy::large_enum_variant)]
pub enum Frame {
    /// A method on a channel (channel 0 for the `connection` class).
    Method(ChannelId, Method),
    /// The content header that follows a content-carrying method.
    Header(ChannelId, ContentHeader),
    /// A piece of content body: a slice of the read buffer when decoded.
    Body(ChannelId, Bytes),
    /// A heartbeat, always on channel 0.
    Heartbeat,
}

/// A frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload does not fit the 32-bit size field.
    #[error("frame payload of {0} octets does not fit a 32-bit size")]
    PayloadTooLarge(usize),
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Method(..) => FrameType::Method,
            Self::Header(..) => FrameType::Header,
            Self::Body(..) => FrameType::Body,
            Self::Heartbeat => FrameType::Heartbeat,
        }
    }

    /// The channel the frame is on.
    pub fn channel(&self) -> ChannelId {
        match self {
            Self::Method(c, _) | Self::Header(c, _) | Self::Body(c, _) => *c,
            Self::Heartbeat => ChannelId::CONNECTION,
        }
    }

    /// The payload's size in octets.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Method(_, m) => m.encoded_len(),
            Self::Header(_, h) => h.encoded_len(),
            Self::Body(_, b) => b.len(),
            Self::Heartbeat => 0,
        }
    }

    /// The whole frame's size: payload plus [`FRAME_OVERHEAD`].
    pub fn encoded_len(&self) -> usize {
        self.payload_len() + FRAME_OVERHEAD
    }

    /// Appends the frame to `dst`, reserving its exact size first.
    ///
    /// A body is copied into `dst` here; to send a body without copying it, queue it on a
    /// [`crate::Transmit`].
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`] when the payload does not fit 32 bits; nothing is written.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let payload_len = self.payload_len();
        let size =
            u32::try_from(payload_len).map_err(|_| EncodeError::PayloadTooLarge(payload_len))?;
        dst.reserve(payload_len + FRAME_OVERHEAD);
        put_header(dst, self.frame_type(), self.channel(), size);
        match self {
            Self::Method(_, m) => m.encode(dst),
            Self::Header(_, h) => h.encode(dst),
            Self::Body(_, b) => dst.put_slice(b),
            Self::Heartbeat => {}
        }
        dst.put_u8(FRAME_END);
        Ok(())
    }
}

/// Writes a frame header.
pub(crate) fn put_header(dst: &mut BytesMut, kind: FrameType, channel: ChannelId, size: u32) {
    dst.put_u8(kind as u8);
    dst.put_u16(channel.0);
    dst.put_u32(size);
}
