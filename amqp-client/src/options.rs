//! Typed options for the channel's methods; every one has a `Default`.

use amqp_wire::FieldTable;

/// The type of an exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeKind {
    /// Routes by exact routing key.
    #[default]
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes by routing-key pattern (`*` one word, `#` any words).
    Topic,
    /// Routes by header values.
    Headers,
    /// A plugin's type, such as `x-delayed-message`.
    Custom(String),
}

impl ExchangeKind {
    /// The name the broker knows the type by.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::Custom(name) => name,
        }
    }
}

/// Options of [`crate::Channel::exchange_declare`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeDeclareOptions {
    /// Only check that it exists (404 if not).
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding (as a source) goes.
    pub auto_delete: bool,
    /// Cannot be published to directly, only through exchange-to-exchange bindings.
    pub internal: bool,
    /// Extra arguments, such as `alternate-exchange`.
    pub arguments: FieldTable,
}

/// Options of [`crate::Channel::queue_declare`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueDeclareOptions {
    /// Only check that it exists (404 if not).
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Only this connection may use it; deleted when the connection closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Extra arguments: `x-queue-type`, `x-message-ttl`, `x-dead-letter-exchange`, ...
    pub arguments: FieldTable,
}

/// Options of [`crate::Channel::queue_delete`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDeleteOptions {
    /// Only if it has no consumers (406 otherwise).
    pub if_unused: bool,
    /// Only if it has no messages (406 otherwise).
    pub if_empty: bool,
}

/// Options of [`crate::Channel::consume`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsumeOptions {
    /// The consumer tag; empty lets the broker choose one.
    pub consumer_tag: String,
    /// The broker considers deliveries settled when sent: no acks (and no redelivery).
    pub no_ack: bool,
    /// The only consumer of the queue (403 if it has others).
    pub exclusive: bool,
    /// Extra arguments: `x-priority`, `x-stream-offset`, ... To consume a stream, pass a
    /// stream argument (`x-stream-offset`, even `"next"`) unless the stream was declared
    /// through this connection: that is how the client knows to hand unread deliveries back
    /// with an ack (a stream refuses nacks) rather than a nack with requeue.
    pub arguments: FieldTable,
    /// How many deliveries the stream buffers; by default the channel's prefetch count, or
    /// 1024 when none was set. A consumer with acks never has more unacknowledged deliveries
    /// at the broker than its buffer holds: with no prefetch set on the channel, `consume`
    /// sets it to the buffer first (`basic.qos`), and a buffer smaller than the prefetch is
    /// raised to it. So a consumer that is not read holds its own deliveries, never the socket
    /// that other channels share. (A no-ack consumer has no prefetch: when its buffer is full,
    /// the connection stops reading the socket until it is read.)
    pub buffer: Option<usize>,
    /// How many octets the stream buffers: bodies, and headers at the memory they decode to
    /// (default 64 MiB). A delivery larger than that is buffered alone. While it is spent,
    /// the connection stops reading the socket until the consumer is read.
    pub buffer_bytes: Option<usize>,
}

/// Options of [`crate::Channel::publish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Return the message (`basic.return`) when no queue takes it.
    pub mandatory: bool,
}
