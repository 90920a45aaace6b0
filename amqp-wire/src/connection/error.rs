//! Why a connection or channel ended, and why a command was refused.

use std::fmt;

use crate::error::{DecodeError, ReplyCode};
use crate::types::{ChannelId, LongStr, ProtocolVersion, ShortStr};

/// Who started a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// The application asked for it.
    Local,
    /// The peer (the broker) sent the close.
    Peer,
    /// This library closed because the peer broke the protocol or a limit.
    Library,
}

/// The reply code, text and failing method of a `connection.close` or `channel.close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// The reply code, e.g. 404.
    pub code: ReplyCode,
    /// The reply text, e.g. `NOT_FOUND - no queue 'x' in vhost '/'`.
    pub text: ShortStr,
    /// The class of the method that caused the close, or 0.
    pub class_id: u16,
    /// The method that caused the close, or 0.
    pub method_id: u16,
    /// Who closed.
    pub initiator: Initiator,
}

impl CloseReason {
    /// A reason this library gives; `text` is cut to 255 octets if longer.
    pub(crate) fn library(code: ReplyCode, text: &str) -> Self {
        Self::new(code, text, Initiator::Library)
    }

    pub(crate) fn new(code: ReplyCode, text: &str, initiator: Initiator) -> Self {
        Self {
            code,
            text: truncated(text),
            class_id: 0,
            method_id: 0,
            initiator,
        }
    }
}

/// A short string of at most 255 octets from `text`, cut at a character boundary.
pub(crate) fn truncated(text: &str) -> ShortStr {
    let mut end = text.len().min(ShortStr::MAX_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortStr::from_bytes(bytes::Bytes::copy_from_slice(&text.as_bytes()[..end])).unwrap_or_default()
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.text)?;
        if self.class_id != 0 || self.method_id != 0 {
            write!(f, " (method {}/{})", self.class_id, self.method_id)?;
        }
        Ok(())
    }
}

/// A rule the peer broke that ends the connection with this code, text and failing method.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: ReplyCode,
    pub(crate) text: &'static str,
    pub(crate) class_id: u16,
    pub(crate) method_id: u16,
}

impl Violation {
    pub(crate) const fn new(code: ReplyCode, text: &'static str) -> Self {
        Self {
            code,
            text,
            class_id: 0,
            method_id: 0,
        }
    }

    pub(crate) fn reason(&self) -> CloseReason {
        let mut reason = CloseReason::library(self.code, self.text);
        (reason.class_id, reason.method_id) = (self.class_id, self.method_id);
        reason
    }
}

/// Why a connection ended. Sticky: once set, every later call reports the same error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection was closed by `connection.close`, from either side (a clean local close
    /// has code 200 and [`Initiator::Local`]).
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The broker refused the credentials (403 ACCESS_REFUSED during the handshake).
    #[error("login refused: {0}")]
    AuthenticationFailed(CloseReason),
    /// The broker refused the virtual host (530 NOT_ALLOWED on `connection.open`).
    #[error("virtual host refused: {0}")]
    VhostRefused(CloseReason),
    /// The peer answered with a protocol header: it does not speak AMQP 0-9-1.
    #[error("peer does not accept AMQP 0-9-1; it offered {0}")]
    UnsupportedVersion(ProtocolVersion),
    /// None of the peer's SASL mechanisms is the one configured.
    #[error("broker offers SASL mechanisms {offered}, not {wanted}")]
    UnsupportedMechanism {
        /// The mechanism the configuration asks for.
        wanted: &'static str,
        /// What the broker offered, space separated.
        offered: LongStr,
    },
    /// The peer sent bytes that break the protocol; we closed with this reason.
    #[error("protocol violation by the peer: {0}")]
    Protocol(CloseReason),
    /// The peer sent a frame that could not be decoded.
    #[error("malformed frame from the peer: {0}")]
    Decode(#[from] DecodeError),
    /// Nothing arrived from the peer for two heartbeat intervals.
    #[error("no heartbeat or other traffic from the peer for two intervals of {0} s")]
    MissedHeartbeats(u16),
    /// The handshake did not finish within the configured deadline.
    #[error("handshake did not finish within the deadline")]
    HandshakeTimeout,
    /// Our `connection.close` got no `close-ok` within the close deadline.
    #[error("broker did not confirm the close in time")]
    CloseTimeout,
    /// The configuration cannot be used (e.g. a virtual host name over 255 octets).
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The socket closed without a `connection.close`.
    #[error("connection closed by the peer without connection.close")]
    UnexpectedEof,
}

impl ConnectionError {
    /// The AMQP reply code, when the connection ended with one.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Self::Closed(r)
            | Self::AuthenticationFailed(r)
            | Self::VhostRefused(r)
            | Self::Protocol(r) => Some(r.code),
            Self::Decode(e) => Some(e.reply_code()),
            _ => None,
        }
    }
}

/// A command the application gave that the connection refuses; nothing is sent and the
/// connection carries on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The connection is not open (still in its handshake, closing, or closed).
    #[error("connection is not open")]
    ConnectionNotOpen,
    /// No channel with that number is open.
    #[error("channel {0} is not open")]
    ChannelNotOpen(ChannelId),
    /// The channel was closed; this is why.
    #[error("channel {channel} is closed: {reason}")]
    ChannelClosed {
        /// The channel.
        channel: ChannelId,
        /// Why it closed.
        reason: CloseReason,
    },
    /// Every channel number up to `channel_max` is in use.
    #[error("all {0} channel numbers are in use")]
    ChannelsExhausted(u16),
    /// The method is not one a client sends on a channel with this call.
    #[error("{0} cannot be sent this way")]
    NotAllowed(&'static str),
    /// A consumer with this tag already exists on the channel, or a consume with it awaits
    /// its consume-ok (the broker would close the connection with 530).
    #[error("consumer tag {0} is already in use on this channel")]
    ConsumerTagInUse(ShortStr),
    /// The delivery tag is not an unacknowledged delivery of this channel (the broker would
    /// close the channel with 406).
    #[error("delivery tag {0} is not awaiting acknowledgement on this channel")]
    UnknownDeliveryTag(u64),
    /// The broker asked this channel to stop sending content (`channel.flow`).
    #[error("the broker paused content on this channel")]
    FlowPaused,
    /// `confirm.select` and `tx.select` cannot both be used on one channel.
    #[error("confirm mode and transactions cannot be mixed on one channel")]
    ConfirmAndTx,
    /// A method (with its arguments table) does not fit one frame of `frame_max` octets.
    #[error("method frame of {size} octets does not fit frame_max {frame_max}")]
    FrameTooLarge {
        /// The frame's size.
        size: usize,
        /// The agreed limit.
        frame_max: u32,
    },
    /// A message is larger than the configured or negotiated limit.
    #[error("message of {size} octets exceeds the limit of {max}")]
    MessageTooLarge {
        /// The body size.
        size: u64,
        /// The limit.
        max: u64,
    },
}
