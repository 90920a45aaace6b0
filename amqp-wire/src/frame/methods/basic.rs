//! The `basic` class (60): publishing, consuming and acknowledging messages.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ReplyCode;
use crate::frame::method::Args;
use crate::frame::wire::{
    PResult, bit, flag, long, longlong, octet, put_short_str, short, short_str, short_str_len,
};
use crate::table::FieldTable;
use crate::types::{DeliveryTag, ShortStr};

const QOS_GLOBAL: u8 = 0x01;

const CONSUME_NO_LOCAL: u8 = 0x01;
const CONSUME_NO_ACK: u8 = 0x02;
const CONSUME_EXCLUSIVE: u8 = 0x04;
const CONSUME_NO_WAIT: u8 = 0x08;

const CANCEL_NO_WAIT: u8 = 0x01;

const PUBLISH_MANDATORY: u8 = 0x01;
const PUBLISH_IMMEDIATE: u8 = 0x02;

const DELIVER_REDELIVERED: u8 = 0x01;

const GET_NO_ACK: u8 = 0x01;

const GET_OK_REDELIVERED: u8 = 0x01;

const ACK_MULTIPLE: u8 = 0x01;

const REJECT_REQUEUE: u8 = 0x01;

const RECOVER_ASYNC_REQUEUE: u8 = 0x01;

const RECOVER_REQUEUE: u8 = 0x01;

const NACK_MULTIPLE: u8 = 0x01;
const NACK_REQUEUE: u8 = 0x02;

/// `basic.qos`: limit the unacknowledged messages sent to the channel's consumers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicQos {
    /// The window in octets; 0 means no limit (RabbitMQ supports only 0).
    pub prefetch_size: u32,
    /// The window in messages; 0 means no limit.
    pub prefetch_count: u16,
    /// RabbitMQ: true applies the limit to the whole channel, false to each new consumer.
    pub global: bool,
}

impl Args for BasicQos {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, prefetch_size) = long(i)?;
        let (i, prefetch_count) = short(i)?;
        let (i, bits) = octet(i)?;
        let global = bit(bits, QOS_GLOBAL);
        Ok((
            i,
            Self {
                prefetch_size,
                prefetch_count,
                global,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32(self.prefetch_size);
        dst.put_u16(self.prefetch_count);
        dst.put_u8(flag(self.global, QOS_GLOBAL));
    }
    fn encoded_len(&self) -> usize {
        4 + 2 + 1
    }
}

/// `basic.qos-ok`: the limit is in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicQosOk;

/// `basic.consume`: start a consumer on a queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicConsume {
    /// The queue's name.
    pub queue: ShortStr,
    /// The consumer tag; empty asks the server to choose one.
    pub consumer_tag: ShortStr,
    /// Do not deliver messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// Be the queue's only consumer.
    pub exclusive: bool,
    /// Do not answer with `basic.consume-ok`.
    pub no_wait: bool,
    /// Extra arguments, such as `x-priority`.
    pub arguments: FieldTable,
}

impl Args for BasicConsume {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, queue) = short_str(src, i)?;
        let (i, consumer_tag) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        let (i, arguments) = FieldTable::decode_from(src, i)?;
        Ok((
            i,
            Self {
                queue,
                consumer_tag,
                no_local: bit(bits, CONSUME_NO_LOCAL),
                no_ack: bit(bits, CONSUME_NO_ACK),
                exclusive: bit(bits, CONSUME_EXCLUSIVE),
                no_wait: bit(bits, CONSUME_NO_WAIT),
                arguments,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.queue);
        put_short_str(dst, &self.consumer_tag);
        dst.put_u8(
            flag(self.no_local, CONSUME_NO_LOCAL)
                | flag(self.no_ack, CONSUME_NO_ACK)
                | flag(self.exclusive, CONSUME_EXCLUSIVE)
                | flag(self.no_wait, CONSUME_NO_WAIT),
        );
        self.arguments.encode(dst);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.queue)
            + short_str_len(&self.consumer_tag)
            + 1
            + self.arguments.encoded_len()
    }
}

/// `basic.consume-ok`: the consumer is started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicConsumeOk {
    /// The consumer tag, chosen by the server if the client left it empty.
    pub consumer_tag: ShortStr,
}

impl Args for BasicConsumeOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, consumer_tag) = short_str(src, i)?;
        Ok((i, Self { consumer_tag }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.consumer_tag);
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.consumer_tag)
    }
}

/// `basic.cancel`: stop a consumer; the server sends it too when a queue goes away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicCancel {
    /// The consumer's tag.
    pub consumer_tag: ShortStr,
    /// Do not answer with `basic.cancel-ok`.
    pub no_wait: bool,
}

impl Args for BasicCancel {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, consumer_tag) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                consumer_tag,
                no_wait: bit(bits, CANCEL_NO_WAIT),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.consumer_tag);
        dst.put_u8(flag(self.no_wait, CANCEL_NO_WAIT));
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.consumer_tag) + 1
    }
}

/// `basic.cancel-ok`: the consumer is stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicCancelOk {
    /// The consumer's tag.
    pub consumer_tag: ShortStr,
}

impl Args for BasicCancelOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, consumer_tag) = short_str(src, i)?;
        Ok((i, Self { consumer_tag }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.consumer_tag);
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.consumer_tag)
    }
}

/// `basic.publish`: publish a message; a content header and body follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicPublish {
    /// The exchange's name; empty for the default exchange.
    pub exchange: ShortStr,
    /// The routing key.
    pub routing_key: ShortStr,
    /// Return the message with `basic.return` if no queue gets it.
    pub mandatory: bool,
    /// Return the message if no consumer can take it at once (RabbitMQ refuses it).
    pub immediate: bool,
}

impl Args for BasicPublish {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                exchange,
                routing_key,
                mandatory: bit(bits, PUBLISH_MANDATORY),
                immediate: bit(bits, PUBLISH_IMMEDIATE),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.exchange);
        put_short_str(dst, &self.routing_key);
        dst.put_u8(
            flag(self.mandatory, PUBLISH_MANDATORY) | flag(self.immediate, PUBLISH_IMMEDIATE),
        );
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.exchange) + short_str_len(&self.routing_key) + 1
    }
}

/// `basic.return`: a mandatory (or immediate) message could not be routed; its content follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicReturn {
    /// Why: usually 312 NO_ROUTE.
    pub reply_code: ReplyCode,
    /// A human-readable reason, such as `NO_ROUTE`.
    pub reply_text: ShortStr,
    /// The exchange the message was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
}

impl Default for BasicReturn {
    fn default() -> Self {
        Self {
            reply_code: ReplyCode::NO_ROUTE,
            reply_text: ShortStr::new(),
            exchange: ShortStr::new(),
            routing_key: ShortStr::new(),
        }
    }
}

impl Args for BasicReturn {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, reply_code) = short(i)?;
        let (i, reply_text) = short_str(src, i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        let reply_code = ReplyCode(reply_code);
        Ok((
            i,
            Self {
                reply_code,
                reply_text,
                exchange,
                routing_key,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(self.reply_code.0);
        put_short_str(dst, &self.reply_text);
        put_short_str(dst, &self.exchange);
        put_short_str(dst, &self.routing_key);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.reply_text)
            + short_str_len(&self.exchange)
            + short_str_len(&self.routing_key)
    }
}

/// `basic.deliver`: a message for a consumer; its content follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicDeliver {
    /// The consumer's tag.
    pub consumer_tag: ShortStr,
    /// The delivery's tag on this channel, for `basic.ack`, `nack` and `reject`.
    pub delivery_tag: DeliveryTag,
    /// The message was delivered before and not acknowledged.
    pub redelivered: bool,
    /// The exchange the message was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
}

impl Args for BasicDeliver {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, consumer_tag) = short_str(src, i)?;
        let (i, delivery_tag) = longlong(i)?;
        let (i, bits) = octet(i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        Ok((
            i,
            Self {
                consumer_tag,
                delivery_tag: DeliveryTag(delivery_tag),
                redelivered: bit(bits, DELIVER_REDELIVERED),
                exchange,
                routing_key,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.consumer_tag);
        dst.put_u64(self.delivery_tag.0);
        dst.put_u8(flag(self.redelivered, DELIVER_REDELIVERED));
        put_short_str(dst, &self.exchange);
        put_short_str(dst, &self.routing_key);
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.consumer_tag)
            + 8
            + 1
            + short_str_len(&self.exchange)
            + short_str_len(&self.routing_key)
    }
}

/// `basic.get`: fetch one message from a queue, if there is one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicGet {
    /// The queue's name.
    pub queue: ShortStr,
    /// The message needs no acknowledgement.
    pub no_ack: bool,
}

impl Args for BasicGet {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, queue) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                queue,
                no_ack: bit(bits, GET_NO_ACK),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.queue);
        dst.put_u8(flag(self.no_ack, GET_NO_ACK));
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.queue) + 1
    }
}

/// `basic.get-ok`: the message `basic.get` asked for; its content follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicGetOk {
    /// The delivery's tag on this channel.
    pub delivery_tag: DeliveryTag,
    /// The message was delivered before and not acknowledged.
    pub redelivered: bool,
    /// The exchange the message was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// The number of messages left in the queue.
    pub message_count: u32,
}

impl Args for BasicGetOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, delivery_tag) = longlong(i)?;
        let (i, bits) = octet(i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        let (i, message_count) = long(i)?;
        Ok((
            i,
            Self {
                delivery_tag: DeliveryTag(delivery_tag),
                redelivered: bit(bits, GET_OK_REDELIVERED),
                exchange,
                routing_key,
                message_count,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64(self.delivery_tag.0);
        dst.put_u8(flag(self.redelivered, GET_OK_REDELIVERED));
        put_short_str(dst, &self.exchange);
        put_short_str(dst, &self.routing_key);
        dst.put_u32(self.message_count);
    }
    fn encoded_len(&self) -> usize {
        8 + 1 + short_str_len(&self.exchange) + short_str_len(&self.routing_key) + 4
    }
}

/// `basic.get-empty`: the queue had no message. Its one argument, `cluster-id`, is reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicGetEmpty;

impl Args for BasicGetEmpty {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _cluster_id) = short_str(src, i)?;
        Ok((i, Self))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &ShortStr::new());
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `basic.ack`: acknowledge a delivery; from the server, confirm a publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicAck {
    /// The delivery (or publish) tag.
    pub delivery_tag: DeliveryTag,
    /// Also acknowledge every earlier tag not yet acknowledged.
    pub multiple: bool,
}

impl Args for BasicAck {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, delivery_tag) = longlong(i)?;
        let (i, bits) = octet(i)?;
        let multiple = bit(bits, ACK_MULTIPLE);
        Ok((
            i,
            Self {
                delivery_tag: DeliveryTag(delivery_tag),
                multiple,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64(self.delivery_tag.0);
        dst.put_u8(flag(self.multiple, ACK_MULTIPLE));
    }
    fn encoded_len(&self) -> usize {
        8 + 1
    }
}

/// `basic.reject`: refuse one delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicReject {
    /// The delivery's tag.
    pub delivery_tag: DeliveryTag,
    /// Put the message back in the queue instead of dropping (or dead-lettering) it.
    pub requeue: bool,
}

impl Args for BasicReject {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, delivery_tag) = longlong(i)?;
        let (i, bits) = octet(i)?;
        let requeue = bit(bits, REJECT_REQUEUE);
        Ok((
            i,
            Self {
                delivery_tag: DeliveryTag(delivery_tag),
                requeue,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64(self.delivery_tag.0);
        dst.put_u8(flag(self.requeue, REJECT_REQUEUE));
    }
    fn encoded_len(&self) -> usize {
        8 + 1
    }
}

/// `basic.recover-async`: redeliver unacknowledged messages, without a reply (deprecated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicRecoverAsync {
    /// Requeue the messages (RabbitMQ supports only true).
    pub requeue: bool,
}

impl Args for BasicRecoverAsync {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                requeue: bit(bits, RECOVER_ASYNC_REQUEUE),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(flag(self.requeue, RECOVER_ASYNC_REQUEUE));
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `basic.recover`: redeliver the channel's unacknowledged messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicRecover {
    /// Requeue the messages rather than redeliver them to the same consumer.
    pub requeue: bool,
}

impl Args for BasicRecover {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                requeue: bit(bits, RECOVER_REQUEUE),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(flag(self.requeue, RECOVER_REQUEUE));
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `basic.recover-ok`: the messages are recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicRecoverOk;

/// `basic.nack`: refuse deliveries (a RabbitMQ extension); from the server, a publish was lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicNack {
    /// The delivery (or publish) tag.
    pub delivery_tag: DeliveryTag,
    /// Also refuse every earlier tag not yet acknowledged.
    pub multiple: bool,
    /// Put the messages back in the queue instead of dropping (or dead-lettering) them.
    pub requeue: bool,
}

impl Args for BasicNack {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, delivery_tag) = longlong(i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                delivery_tag: DeliveryTag(delivery_tag),
                multiple: bit(bits, NACK_MULTIPLE),
                requeue: bit(bits, NACK_REQUEUE),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64(self.delivery_tag.0);
        dst.put_u8(flag(self.multiple, NACK_MULTIPLE) | flag(self.requeue, NACK_REQUEUE));
    }
    fn encoded_len(&self) -> usize {
        8 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::method::Method;
    use crate::frame::methods::testing::{check_vector, round_trip};

    fn s(text: &'static str) -> ShortStr {
        ShortStr::from_static(text)
    }

    #[test]
    fn every_basic_method_round_trips() {
        round_trip(
            BasicQos {
                prefetch_size: 1,
                prefetch_count: 500,
                global: true,
            }
            .into(),
        );
        round_trip(BasicQosOk.into());
        let mut arguments = FieldTable::new();
        arguments.insert("x-priority", 5i32);
        round_trip(
            BasicConsume {
                queue: s("jobs"),
                consumer_tag: s("ctag-1"),
                no_local: true,
                no_ack: false,
                exclusive: true,
                no_wait: false,
                arguments,
            }
            .into(),
        );
        round_trip(
            BasicConsumeOk {
                consumer_tag: s("amq.ctag-xyz"),
            }
            .into(),
        );
        round_trip(
            BasicCancel {
                consumer_tag: s("ctag-1"),
                no_wait: true,
            }
            .into(),
        );
        round_trip(
            BasicCancelOk {
                consumer_tag: s("ctag-1"),
            }
            .into(),
        );
        round_trip(
            BasicPublish {
                exchange: s("amq.direct"),
                routing_key: s("q"),
                mandatory: false,
                immediate: true,
            }
            .into(),
        );
        round_trip(
            BasicReturn {
                reply_code: ReplyCode::NO_ROUTE,
                reply_text: s("NO_ROUTE"),
                exchange: s("amq.direct"),
                routing_key: s("nowhere"),
            }
            .into(),
        );
        round_trip(
            BasicDeliver {
                consumer_tag: s("ctag-1"),
                delivery_tag: DeliveryTag(u64::MAX),
                redelivered: true,
                exchange: s("amq.topic"),
                routing_key: s("a.b"),
            }
            .into(),
        );
        round_trip(
            BasicGet {
                queue: s("jobs"),
                no_ack: true,
            }
            .into(),
        );
        round_trip(
            BasicGetOk {
                delivery_tag: DeliveryTag(7),
                redelivered: true,
                exchange: s(""),
                routing_key: s("jobs"),
                message_count: 41,
            }
            .into(),
        );
        round_trip(BasicGetEmpty.into());
        round_trip(
            BasicAck {
                delivery_tag: DeliveryTag(3),
                multiple: true,
            }
            .into(),
        );
        round_trip(
            BasicReject {
                delivery_tag: DeliveryTag(4),
                requeue: true,
            }
            .into(),
        );
        round_trip(BasicRecoverAsync { requeue: true }.into());
        round_trip(BasicRecover { requeue: true }.into());
        round_trip(BasicRecoverOk.into());
        round_trip(
            BasicNack {
                delivery_tag: DeliveryTag(9),
                multiple: false,
                requeue: true,
            }
            .into(),
        );
    }

    #[test]
    fn publish_vector_4() {
        let publish = BasicPublish {
            routing_key: s("q"),
            ..Default::default()
        };
        check_vector(
            1,
            publish.into(),
            "01 00 01 00 00 00 0A 00 3C 00 28 00 00 00 01 71 00 CE",
        );
    }

    #[test]
    fn publish_mandatory_vector_7() {
        let publish = BasicPublish {
            exchange: s("amq.direct"),
            routing_key: s("q"),
            mandatory: true,
            immediate: false,
        };
        check_vector(
            1,
            publish.into(),
            "01 00 01 00 00 00 14 00 3C 00 28 00 00 0A 61 6D 71 2E 64 69 72 65 63 74 01 71 01 CE",
        );
    }

    #[test]
    fn consume_vector_10() {
        let consume = BasicConsume {
            queue: s("q"),
            no_ack: true,
            ..Default::default()
        };
        check_vector(
            1,
            consume.into(),
            "01 00 01 00 00 00 0E 00 3C 00 14 00 00 01 71 00 02 00 00 00 00 CE",
        );
    }

    #[test]
    fn qos_vector_11() {
        let qos = BasicQos {
            prefetch_size: 0,
            prefetch_count: 10,
            global: false,
        };
        check_vector(
            1,
            qos.into(),
            "01 00 01 00 00 00 0B 00 3C 00 0A 00 00 00 00 00 0A 00 CE",
        );
    }

    #[test]
    fn ack_vector_12() {
        let ack = BasicAck {
            delivery_tag: DeliveryTag(1),
            multiple: false,
        };
        check_vector(
            1,
            ack.into(),
            "01 00 01 00 00 00 0D 00 3C 00 50 00 00 00 00 00 00 00 01 00 CE",
        );
    }

    #[test]
    fn nack_vector_13() {
        let nack = BasicNack {
            delivery_tag: DeliveryTag(5),
            multiple: true,
            requeue: true,
        };
        check_vector(
            1,
            nack.into(),
            "01 00 01 00 00 00 0D 00 3C 00 78 00 00 00 00 00 00 00 05 03 CE",
        );
    }

    /// The payload of a method, as written.
    fn payload(m: impl Into<Method>) -> Bytes {
        let mut dst = BytesMut::new();
        m.into().encode(&mut dst);
        dst.freeze()
    }

    #[test]
    fn bits_land_at_their_masks() {
        // ids (4), ticket (2), queue "" (1), consumer-tag "" (1): then the bits.
        let consume = |c: BasicConsume| payload(c)[8];
        assert_eq!(
            consume(BasicConsume {
                no_local: true,
                ..Default::default()
            }),
            0x01
        );
        assert_eq!(
            consume(BasicConsume {
                no_ack: true,
                ..Default::default()
            }),
            0x02
        );
        assert_eq!(
            consume(BasicConsume {
                exclusive: true,
                ..Default::default()
            }),
            0x04
        );
        assert_eq!(
            consume(BasicConsume {
                no_wait: true,
                ..Default::default()
            }),
            0x08
        );

        let last = |m: Method| payload(m).last().copied();
        let publish = |mandatory, immediate| {
            last(
                BasicPublish {
                    mandatory,
                    immediate,
                    ..Default::default()
                }
                .into(),
            )
        };
        assert_eq!(publish(true, false), Some(0x01));
        assert_eq!(publish(false, true), Some(0x02));
        assert_eq!(publish(true, true), Some(0x03));
        let nack = |multiple, requeue| {
            last(
                BasicNack {
                    multiple,
                    requeue,
                    ..Default::default()
                }
                .into(),
            )
        };
        assert_eq!(nack(true, false), Some(0x01));
        assert_eq!(nack(false, true), Some(0x02));
        assert_eq!(
            last(
                BasicQos {
                    global: true,
                    ..Default::default()
                }
                .into()
            ),
            Some(0x01)
        );
        assert_eq!(
            last(
                BasicCancel {
                    no_wait: true,
                    ..Default::default()
                }
                .into()
            ),
            Some(0x01)
        );
        assert_eq!(
            last(
                BasicGet {
                    no_ack: true,
                    ..Default::default()
                }
                .into()
            ),
            Some(0x01)
        );
        assert_eq!(
            last(
                BasicAck {
                    multiple: true,
                    ..Default::default()
                }
                .into()
            ),
            Some(0x01)
        );
        assert_eq!(
            last(
                BasicReject {
                    requeue: true,
                    ..Default::default()
                }
                .into()
            ),
            Some(0x01)
        );
        assert_eq!(last(BasicRecover { requeue: true }.into()), Some(0x01));
        assert_eq!(last(BasicRecoverAsync { requeue: true }.into()), Some(0x01));
    }

    #[test]
    fn deliver_and_get_ok_bits_sit_after_the_delivery_tag() {
        let deliver = BasicDeliver {
            redelivered: true,
            ..Default::default()
        };
        // ids (4), consumer-tag "" (1), delivery-tag (8): then the bits.
        assert_eq!(payload(deliver)[13], 0x01);
        let get_ok = BasicGetOk {
            redelivered: true,
            ..Default::default()
        };
        // ids (4), delivery-tag (8): then the bits.
        assert_eq!(payload(get_ok)[12], 0x01);
    }

    #[test]
    fn deliver_strings_are_slices_of_the_payload() {
        let deliver = BasicDeliver {
            consumer_tag: s("ctag"),
            delivery_tag: DeliveryTag(1),
            redelivered: false,
            exchange: s("amq.direct"),
            routing_key: s("q"),
        };
        let payload = payload(deliver.clone());
        let Ok(Method::BasicDeliver(back)) = Method::decode(&payload) else {
            panic!("not a basic.deliver");
        };
        assert_eq!(back, deliver);
        let range = payload.as_ptr_range();
        for s in [&back.consumer_tag, &back.exchange, &back.routing_key] {
            assert!(range.contains(&s.as_bytes().as_ptr()), "{s:?} was copied");
        }
    }

    #[test]
    fn get_empty_ignores_cluster_id() {
        let payload = Bytes::from_static(b"\x00\x3c\x00\x48\x02id");
        assert_eq!(Method::decode(&payload), Ok(BasicGetEmpty.into()));
    }

    #[test]
    fn return_defaults_to_no_route() {
        assert_eq!(BasicReturn::default().reply_code, ReplyCode::NO_ROUTE);
    }

    #[test]
    fn truncated_deliver_is_an_error() {
        let whole = payload(BasicDeliver {
            consumer_tag: s("c"),
            ..Default::default()
        });
        for len in 4..whole.len() {
            assert!(
                Method::decode(&whole.slice(..len)).is_err(),
                "accepted {len} octets"
            );
        }
    }
}
