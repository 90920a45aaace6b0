//! Reply codes and decode errors.
//!
//! Every way a peer's bytes can be wrong maps to a [`DecodeError`], and every `DecodeError`
//! knows the [`ReplyCode`] a connection must close with.

use std::fmt;

/// An AMQP reply code, as carried by `connection.close`, `channel.close` and `basic.return`.
///
/// The constants are the codes of the 0-9-1 spec (the `constant` section of
/// `amqp-rabbitmq-0.9.1.json`); [`ReplyCode::is_hard`] tells a connection error from a channel one.
///
/// ```
/// use amqp_wire::ReplyCode;
/// assert!(ReplyCode::FRAME_ERROR.is_hard());
/// assert!(!ReplyCode::NOT_FOUND.is_hard());
/// assert_eq!(ReplyCode::NOT_FOUND.to_string(), "404 NOT_FOUND");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(pub u16);

impl ReplyCode {
    /// 200: the method completed; a normal close.
    pub const SUCCESS: Self = Self(200);
    /// 311: the message was too large (RabbitMQ uses 406 instead).
    pub const CONTENT_TOO_LARGE: Self = Self(311);
    /// 312: a mandatory message could not be routed (the reply code of `basic.return`).
    pub const NO_ROUTE: Self = Self(312);
    /// 313: an immediate message had no consumer (RabbitMQ does not support immediate).
    pub const NO_CONSUMERS: Self = Self(313);
    /// 320: an operator or the broker closed the connection.
    pub const CONNECTION_FORCED: Self = Self(320);
    /// 402: an invalid path was given.
    pub const INVALID_PATH: Self = Self(402);
    /// 403: access to a resource was refused.
    pub const ACCESS_REFUSED: Self = Self(403);
    /// 404: the exchange or queue does not exist.
    pub const NOT_FOUND: Self = Self(404);
    /// 405: the resource is locked by another connection (exclusive queue).
    pub const RESOURCE_LOCKED: Self = Self(405);
    /// 406: a precondition failed (redeclare with other arguments, unknown delivery tag, ...).
    pub const PRECONDITION_FAILED: Self = Self(406);
    /// 501: a malformed frame.
    pub const FRAME_ERROR: Self = Self(501);
    /// 502: malformed method arguments.
    pub const SYNTAX_ERROR: Self = Self(502);
    /// 503: an invalid or unknown method.
    pub const COMMAND_INVALID: Self = Self(503);
    /// 504: a method on a channel that is not open, or a channel misuse.
    pub const CHANNEL_ERROR: Self = Self(504);
    /// 505: a frame that was not expected in this state (content out of order).
    pub const UNEXPECTED_FRAME: Self = Self(505);
    /// 506: the server ran out of a resource.
    pub const RESOURCE_ERROR: Self = Self(506);
    /// 530: the operation is not allowed (vhost refused, consumer tag reused, ...).
    pub const NOT_ALLOWED: Self = Self(530);
    /// 540: the peer does not implement this functionality.
    pub const NOT_IMPLEMENTED: Self = Self(540);
    /// 541: an internal error in the peer.
    pub const INTERNAL_ERROR: Self = Self(541);

    /// True when the spec marks this code as a connection ("hard") error.
    ///
    /// 403 is a channel error in the spec even though RabbitMQ sends it as `connection.close`
    /// for a refused login; which close carried a code decides its scope, not the code alone.
    pub fn is_hard(self) -> bool {
        matches!(self.0, 320 | 402 | 501..=506 | 530 | 540 | 541)
    }

    /// The spec's name of the code (`NOT_FOUND`), or `None` for a code the spec does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            200 => "REPLY_SUCCESS",
            311 => "CONTENT_TOO_LARGE",
            312 => "NO_ROUTE",
            313 => "NO_CONSUMERS",
            320 => "CONNECTION_FORCED",
            402 => "INVALID_PATH",
            403 => "ACCESS_REFUSED",
            404 => "NOT_FOUND",
            405 => "RESOURCE_LOCKED",
            406 => "PRECONDITION_FAILED",
            501 => "FRAME_ERROR",
            502 => "SYNTAX_ERROR",
            503 => "COMMAND_INVALID",
            504 => "CHANNEL_ERROR",
            505 => "UNEXPECTED_FRAME",
            506 => "RESOURCE_ERROR",
            530 => "NOT_ALLOWED",
            540 => "NOT_IMPLEMENTED",
            541 => "INTERNAL_ERROR",
            _ => return None,
        })
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} {name}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Why bytes from the peer could not be decoded.
///
/// Cheap to clone and compare, allocation-free. [`DecodeError::reply_code`] gives the code the
/// connection must be closed with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The peer answered with a protocol header: it does not speak AMQP 0-9-1 and will close.
    #[error("peer refused the protocol version and offered AMQP {0}")]
    ProtocolHeader(crate::ProtocolVersion),
    /// The octet after a frame's payload was not `0xCE`.
    #[error("frame-end octet was {found:#04x}, expected 0xce")]
    FrameEnd {
        /// The octet found instead.
        found: u8,
    },
    /// A frame's size is larger than the negotiated `frame_max`.
    #[error("frame of {size} octets exceeds frame_max {max}")]
    FrameTooLarge {
        /// The whole frame size (payload plus 8 octets of header and end).
        size: u64,
        /// The negotiated limit.
        max: u32,
    },
    /// A frame type other than method (1), header (2), body (3) or heartbeat (8).
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A heartbeat with a payload.
    #[error("heartbeat frame with a payload of {0} octets")]
    HeartbeatPayload(u32),
    /// A frame on a channel where its type is not allowed (heartbeat off channel 0, content on 0).
    #[error("{frame} frame on channel {channel}")]
    WrongChannel {
        /// The frame type's name.
        frame: &'static str,
        /// The channel it came on.
        channel: u16,
    },
    /// A (class, method) pair this codec does not know.
    #[error("unknown method {class_id}/{method_id}")]
    UnknownMethod {
        /// The class id.
        class_id: u16,
        /// The method id.
        method_id: u16,
    },
    /// A content header with a class other than basic (60).
    #[error("content header for class {0}, expected 60 (basic)")]
    UnknownContentClass(u16),
    /// A content header with a non-zero weight.
    #[error("content header weight was {0}, expected 0")]
    ContentWeight(u16),
    /// A field-table value with a type tag RabbitMQ does not use.
    #[error("unknown field type tag {0:#04x}")]
    UnknownFieldType(u8),
    /// Field tables or arrays nested deeper than [`crate::table::MAX_DEPTH`].
    #[error("field tables nested deeper than {}", crate::table::MAX_DEPTH)]
    TableTooDeep,
    /// A payload ended before its fields did, or a field is malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A payload had octets left over after its last field.
    #[error("{0} octets after the last field")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// The reply code a connection closes with when it meets this error.
    ///
    /// Framing faults are 501 (frame-error), malformed fields 502 (syntax-error), unknown
    /// methods 503 (command-invalid) and frames that may not appear where they did 505
    /// (unexpected-frame), as RabbitMQ does.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Self::ProtocolHeader(_) => ReplyCode::NOT_IMPLEMENTED,
            Self::FrameEnd { .. }
            | Self::FrameTooLarge { .. }
            | Self::UnknownFrameType(_)
            | Self::HeartbeatPayload(_) => ReplyCode::FRAME_ERROR,
            // RabbitMQ answers a header whose class does not match its method with 505.
            Self::WrongChannel { .. } | Self::ContentWeight(_) | Self::UnknownContentClass(_) => {
                ReplyCode::UNEXPECTED_FRAME
            }
            Self::UnknownMethod { .. } => ReplyCode::COMMAND_INVALID,
            Self::UnknownFieldType(_)
            | Self::TableTooDeep
            | Self::Malformed(_)
            | Self::TrailingBytes(_) => ReplyCode::SYNTAX_ERROR,
        }
    }
}
