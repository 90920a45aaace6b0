//! The one error type of the client.

use std::sync::Arc;
use std::time::Duration;

use amqp_wire::ReplyCode;
use amqp_wire::connection::{CloseReason, ConnectionError, UsageError};

/// Everything that can go wrong, as one enum. When the broker closed a channel or the
/// connection, the variant carries its reply code and text, so codes are matchable:
///
/// ```
/// use amqp_client::{Error, ReplyCode};
/// fn is_missing(e: &Error) -> bool {
///     e.reply_code() == Some(ReplyCode::NOT_FOUND)
/// }
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker closed the channel (a soft error such as 404, 405, 406, 403). Every pending
    /// and later call on that channel fails with this same error.
    #[error("channel closed: {0}")]
    ChannelClosed(CloseReason),
    /// The connection ended: closed by either side, refused login or vhost, protocol
    /// violation, missed heartbeats.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The call breaks a rule the engine checks locally; nothing was sent.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
    /// A TLS error.
    #[error("tls error: {0}")]
    Tls(#[from] rustls::Error),
    /// The broker did not answer within the operation's timeout.
    #[error("{operation} got no answer within {after:?}")]
    Timeout {
        /// What was waiting.
        operation: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The broker blocked publishers (a resource alarm) for longer than the configured wait.
    #[error("broker blocked publishing for longer than {0:?}")]
    Blocked(Duration),
    /// The broker cancelled the consumer (its queue was deleted, or its node went away).
    #[error("consumer {0} was cancelled by the broker")]
    ConsumerCancelled(String),
    /// A name (queue, exchange, routing key, consumer tag) longer than 255 octets.
    #[error("{what} of {len} octets is longer than 255")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The broker answered with a method this call does not expect (a broker bug).
    #[error("unexpected reply {0}")]
    UnexpectedReply(&'static str),
    /// The broker did not confirm this publish within `confirm_timeout`, or the connection
    /// was lost before it did: the message may or may not have been delivered. Publish it
    /// again for at-least-once delivery (or set `Recovery::republish`).
    #[error(
        "the broker did not confirm the publish in time, or the connection was lost first; its outcome is unknown"
    )]
    OutcomeUnknown,
    /// The delivery came before a reconnection: its tag means nothing on the new connection
    /// (the broker requeued the message when the old one was lost), so it cannot be settled.
    #[error("delivery tag {0} was received before a reconnection and cannot be settled")]
    StaleDelivery(u64),
    /// Output waited and the broker read none of it for this long (three heartbeat intervals,
    /// or `blocked_timeout` while the broker says it blocked us): the connection was given up,
    /// and what was not written is lost (a recovery follows if it is on).
    #[error("the broker read nothing we sent for {0:?}; connection given up")]
    WriteStalled(Duration),
    /// A connection URI or option that cannot be used.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
}

/// What is wrong with a URI or an option.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URI's scheme is not `amqp` or `amqps`.
    #[error("scheme must be amqp or amqps, not {0:?}")]
    Scheme(String),
    /// The URI names no host.
    #[error("no host in the URI")]
    NoHost,
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port {0:?}")]
    Port(String),
    /// A query parameter with a value that cannot be used.
    #[error("invalid value {value:?} for {key}")]
    Value {
        /// The parameter.
        key: &'static str,
        /// Its value as given.
        value: String,
    },
    /// A query parameter this client does not know.
    #[error("unknown URI option {0:?}")]
    UnknownOption(String),
    /// A percent-encoded part that is not UTF-8.
    #[error("percent-encoded {0} is not UTF-8")]
    Encoding(&'static str),
    /// A file (CA, certificate, key) that could not be read or parsed.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// An option that cannot be used here: given twice, needing another option, or needing
    /// an `amqps` URI.
    #[error("{option} {reason}")]
    Conflict {
        /// The option.
        option: &'static str,
        /// What is wrong, such as "needs an amqps URI".
        reason: &'static str,
    },
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl Error {
    /// The AMQP reply code, when the broker (or this library) closed a channel or the
    /// connection with one.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Self::ChannelClosed(reason) => Some(reason.code),
            Self::Connection(e) => e.reply_code(),
            _ => None,
        }
    }

    /// The broker's reply text, with [`Error::reply_code`].
    pub fn reply_text(&self) -> Option<&str> {
        let (Self::ChannelClosed(reason)
        | Self::Connection(
            ConnectionError::Closed(reason)
            | ConnectionError::AuthenticationFailed(reason)
            | ConnectionError::VhostRefused(reason)
            | ConnectionError::Protocol(reason),
        )) = self
        else {
            return None;
        };
        reason.text.to_str().ok()
    }

    /// True for a socket error.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io(_))
    }

    /// The socket error, if this is one.
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }

    /// True when the connection is gone (as opposed to one channel or one call).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::Io(_) | Self::Tls(_))
    }
}

/// The result of every fallible client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
