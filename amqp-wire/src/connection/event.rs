//! What the connection tells the application: [`Event`] and the messages it carries.

use bytes::Bytes;

use super::error::{CloseReason, ConnectionError};
use crate::frame::content::BasicProperties;
use crate::frame::method::Method;
use crate::table::FieldTable;
use crate::types::{ChannelId, DeliveryTag, ShortStr};

/// Identifies a synchronous request, so its reply can be matched: returned by the command
/// that sent it, carried by the [`Event`] that answers it. Unique per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// The limits agreed in `connection.tune` / `tune-ok`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tune {
    /// The highest channel number (0: no limit, which means 65535).
    pub channel_max: u16,
    /// The largest frame in octets, overhead included (0: no limit).
    pub frame_max: u32,
    /// The heartbeat interval in seconds (0: no heartbeats).
    pub heartbeat: u16,
}

/// A message the broker handed us: from a consumer (`basic.deliver`) or `basic.get`.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The consumer it was delivered to; empty for `basic.get`.
    pub consumer_tag: ShortStr,
    /// The tag to acknowledge it with, on the channel it came on.
    pub delivery_tag: DeliveryTag,
    /// True when it was delivered before and not acknowledged.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body: the received frame's octets when it came in one frame.
    pub body: Bytes,
}

/// A mandatory message the broker could not route, sent back with `basic.return`.
#[derive(Clone, Debug, PartialEq)]
pub struct Returned {
    /// Why, usually 312 NO_ROUTE.
    pub reply_code: crate::ReplyCode,
    /// The reply text, such as `NO_ROUTE`.
    pub reply_text: ShortStr,
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
}

/// The broker's answer to a publish in confirm mode.
#[derive(Clone, Debug, PartialEq)]
pub enum Confirmation {
    /// The broker took responsibility for the message.
    Ack,
    /// The broker could not take it (a queue refused it, or an internal error).
    Nack,
    /// The message was mandatory and could not be routed: the broker returned it, then acked.
    Returned(Box<Returned>),
}

/// Something the application must know. Poll with [`super::Connection::poll_event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake is done; commands may be given.
    Connected {
        /// The broker's `server-properties` (product, version, capabilities, ...).
        server_properties: FieldTable,
        /// The agreed limits.
        tune: Tune,
    },
    /// A channel asked for with `open_channel` is open.
    ChannelOpened(ChannelId),
    /// The reply to a synchronous request (`queue.declare-ok`, `basic.consume-ok`, ...).
    Reply {
        /// The channel.
        channel: ChannelId,
        /// The request it answers.
        request: RequestId,
        /// The reply.
        method: Method,
    },
    /// The reply to `basic.get`: a message, or `None` when the queue was empty.
    GetReply {
        /// The channel.
        channel: ChannelId,
        /// The request it answers.
        request: RequestId,
        /// The message, with the number of messages left in the queue.
        message: Option<(Delivery, u32)>,
    },
    /// A message for a consumer.
    Delivery {
        /// The channel.
        channel: ChannelId,
        /// The message.
        delivery: Delivery,
    },
    /// The broker cancelled a consumer (its queue was deleted, or its node went away).
    ConsumerCancelled {
        /// The channel.
        channel: ChannelId,
        /// The consumer.
        consumer_tag: ShortStr,
    },
    /// A returned message that no confirm waits for (the channel is not in confirm mode).
    Returned {
        /// The channel.
        channel: ChannelId,
        /// The message.
        message: Box<Returned>,
    },
    /// The outcome of one publish in confirm mode; a `multiple` ack becomes one event per tag.
    Confirm {
        /// The channel.
        channel: ChannelId,
        /// The tag `basic_publish` returned for it.
        tag: DeliveryTag,
        /// What happened to it.
        outcome: Confirmation,
    },
    /// The broker paused (`active: false`) or resumed content on a channel.
    Flow {
        /// The channel.
        channel: ChannelId,
        /// Whether content may flow.
        active: bool,
    },
    /// A channel ended. Every request still waiting on it, and every publish not yet
    /// confirmed, has failed with this reason.
    ChannelClosed {
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: CloseReason,
    },
    /// The broker stopped reading from publishers (a memory or disk alarm).
    Blocked {
        /// The broker's reason.
        reason: ShortStr,
    },
    /// The broker reads from publishers again.
    Unblocked,
    /// The connection ended. Every channel, request and unconfirmed publish ended with it.
    Closed(ConnectionError),
}
