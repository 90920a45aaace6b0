//! The `queue` class (50).

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::method::Args;
use crate::frame::wire::{
    PResult, bit, flag, long, octet, put_short_str, short, short_str, short_str_len,
};
use crate::table::FieldTable;
use crate::types::ShortStr;

const DECLARE_PASSIVE: u8 = 0x01;
const DECLARE_DURABLE: u8 = 0x02;
const DECLARE_EXCLUSIVE: u8 = 0x04;
const DECLARE_AUTO_DELETE: u8 = 0x08;
const DECLARE_NO_WAIT: u8 = 0x10;

const BIND_NO_WAIT: u8 = 0x01;

const PURGE_NO_WAIT: u8 = 0x01;

const DELETE_IF_UNUSED: u8 = 0x01;
const DELETE_IF_EMPTY: u8 = 0x02;
const DELETE_NO_WAIT: u8 = 0x04;

/// `queue.declare`: create a queue, or check that one exists (`passive`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueDeclare {
    /// The queue's name; empty asks the server to choose one.
    pub queue: ShortStr,
    /// Only check that the queue exists; fail with 404 if not.
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Only this connection may use it; it is deleted when the connection closes.
    pub exclusive: bool,
    /// Delete the queue when its last consumer goes.
    pub auto_delete: bool,
    /// Do not answer with `queue.declare-ok`.
    pub no_wait: bool,
    /// Extra arguments, such as `x-message-ttl` or `x-queue-type`.
    pub arguments: FieldTable,
}

impl Args for QueueDeclare {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, queue) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        let (i, arguments) = FieldTable::decode_from(src, i)?;
        Ok((
            i,
            Self {
                queue,
                passive: bit(bits, DECLARE_PASSIVE),
                durable: bit(bits, DECLARE_DURABLE),
                exclusive: bit(bits, DECLARE_EXCLUSIVE),
                auto_delete: bit(bits, DECLARE_AUTO_DELETE),
                no_wait: bit(bits, DECLARE_NO_WAIT),
                arguments,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.queue);
        dst.put_u8(
            flag(self.passive, DECLARE_PASSIVE)
                | flag(self.durable, DECLARE_DURABLE)
                | flag(self.exclusive, DECLARE_EXCLUSIVE)
                | flag(self.auto_delete, DECLARE_AUTO_DELETE)
                | flag(self.no_wait, DECLARE_NO_WAIT),
        );
        self.arguments.encode(dst);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.queue) + 1 + self.arguments.encoded_len()
    }
}

/// `queue.declare-ok`: the queue exists; its name (chosen by the server if asked) and counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDeclareOk {
    /// The queue's name.
    pub queue: ShortStr,
    /// The number of messages ready in the queue.
    pub message_count: u32,
    /// The number of consumers of the queue.
    pub consumer_count: u32,
}

impl Args for QueueDeclareOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, queue) = short_str(src, i)?;
        let (i, message_count) = long(i)?;
        let (i, consumer_count) = long(i)?;
        Ok((
            i,
            Self {
                queue,
                message_count,
                consumer_count,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.queue);
        dst.put_u32(self.message_count);
        dst.put_u32(self.consumer_count);
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.queue) + 8
    }
}

/// `queue.bind`: bind a queue to an exchange.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueBind {
    /// The queue's name.
    pub queue: ShortStr,
    /// The exchange's name.
    pub exchange: ShortStr,
    /// The binding key.
    pub routing_key: ShortStr,
    /// Do not answer with `queue.bind-ok`.
    pub no_wait: bool,
    /// Extra arguments, such as the match of a headers exchange.
    pub arguments: FieldTable,
}

impl Args for QueueBind {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, queue) = short_str(src, i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        let (i, arguments) = FieldTable::decode_from(src, i)?;
        let no_wait = bit(bits, BIND_NO_WAIT);
        Ok((
            i,
            Self {
                queue,
                exchange,
                routing_key,
                no_wait,
                arguments,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.queue);
        put_short_str(dst, &self.exchange);
        put_short_str(dst, &self.routing_key);
        dst.put_u8(flag(self.no_wait, BIND_NO_WAIT));
        self.arguments.encode(dst);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.queue)
            + short_str_len(&self.exchange)
            + short_str_len(&self.routing_key)
            + 1
            + self.arguments.encoded_len()
    }
}

/// `queue.bind-ok`: the binding exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueBindOk;

/// `queue.purge`: remove every ready message from a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePurge {
    /// The queue's name.
    pub queue: ShortStr,
    /// Do not answer with `queue.purge-ok`.
    pub no_wait: bool,
}

impl Args for QueuePurge {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, queue) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                queue,
                no_wait: bit(bits, PURGE_NO_WAIT),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.queue);
        dst.put_u8(flag(self.no_wait, PURGE_NO_WAIT));
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.queue) + 1
    }
}

/// `queue.purge-ok`: the queue is purged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePurgeOk {
    /// The number of messages removed.
    pub message_count: u32,
}

impl Args for QueuePurgeOk {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, message_count) = long(i)?;
        Ok((i, Self { message_count }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32(self.message_count);
    }
    fn encoded_len(&self) -> usize {
        4
    }
}

/// `queue.delete`: delete a queue, dropping its messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDelete {
    /// The queue's name.
    pub queue: ShortStr,
    /// Only delete it if it has no consumers; fail with 406 otherwise.
    pub if_unused: bool,
    /// Only delete it if it has no messages; fail with 406 otherwise.
    pub if_empty: bool,
    /// Do not answer with `queue.delete-ok`.
    pub no_wait: bool,
}

impl Args for QueueDelete {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, queue) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                queue,
                if_unused: bit(bits, DELETE_IF_UNUSED),
                if_empty: bit(bits, DELETE_IF_EMPTY),
                no_wait: bit(bits, DELETE_NO_WAIT),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.queue);
        dst.put_u8(
            flag(self.if_unused, DELETE_IF_UNUSED)
                | flag(self.if_empty, DELETE_IF_EMPTY)
                | flag(self.no_wait, DELETE_NO_WAIT),
        );
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.queue) + 1
    }
}

/// `queue.delete-ok`: the queue is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDeleteOk {
    /// The number of messages deleted with it.
    pub message_count: u32,
}

impl Args for QueueDeleteOk {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, message_count) = long(i)?;
        Ok((i, Self { message_count }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32(self.message_count);
    }
    fn encoded_len(&self) -> usize {
        4
    }
}

/// `queue.unbind`: remove a binding of a queue to an exchange. It has no `nowait` bit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueUnbind {
    /// The queue's name.
    pub queue: ShortStr,
    /// The exchange's name.
    pub exchange: ShortStr,
    /// The binding key.
    pub routing_key: ShortStr,
    /// The binding's arguments, as given to `queue.bind`.
    pub arguments: FieldTable,
}

impl Args for QueueUnbind {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, queue) = short_str(src, i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        let (i, arguments) = FieldTable::decode_from(src, i)?;
        Ok((
            i,
            Self {
                queue,
                exchange,
                routing_key,
                arguments,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.queue);
        put_short_str(dst, &self.exchange);
        put_short_str(dst, &self.routing_key);
        self.arguments.encode(dst);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.queue)
            + short_str_len(&self.exchange)
            + short_str_len(&self.routing_key)
            + self.arguments.encoded_len()
    }
}

/// `queue.unbind-ok`: the binding is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueUnbindOk;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::method::Method;
    use crate::frame::methods::testing::{check_vector, round_trip};
    use crate::table::FieldValue;

    fn args() -> FieldTable {
        let mut args = FieldTable::new();
        args.insert("x-queue-type", "quorum");
        args.insert("x-max-length", 10i64);
        args
    }

    #[test]
    fn every_queue_method_round_trips() {
        round_trip(
            QueueDeclare {
                queue: ShortStr::from_static("jobs"),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: true,
                no_wait: false,
                arguments: args(),
            }
            .into(),
        );
        round_trip(
            QueueDeclareOk {
                queue: ShortStr::from_static("amq.gen-abc"),
                message_count: 70_000,
                consumer_count: 3,
            }
            .into(),
        );
        round_trip(
            QueueBind {
                queue: ShortStr::from_static("jobs"),
                exchange: ShortStr::from_static("amq.topic"),
                routing_key: ShortStr::from_static("jobs.*"),
                no_wait: true,
                arguments: args(),
            }
            .into(),
        );
        round_trip(QueueBindOk.into());
        round_trip(
            QueuePurge {
                queue: ShortStr::from_static("jobs"),
                no_wait: true,
            }
            .into(),
        );
        round_trip(
            QueuePurgeOk {
                message_count: u32::MAX,
            }
            .into(),
        );
        round_trip(
            QueueDelete {
                queue: ShortStr::from_static("jobs"),
                if_unused: true,
                if_empty: false,
                no_wait: true,
            }
            .into(),
        );
        round_trip(QueueDeleteOk { message_count: 12 }.into());
        round_trip(
            QueueUnbind {
                queue: ShortStr::from_static("jobs"),
                exchange: ShortStr::from_static("amq.topic"),
                routing_key: ShortStr::from_static("jobs.*"),
                arguments: args(),
            }
            .into(),
        );
        round_trip(QueueUnbindOk.into());
    }

    #[test]
    fn declare_vector_8() {
        let declare = QueueDeclare {
            queue: ShortStr::from_static("q"),
            durable: true,
            ..Default::default()
        };
        check_vector(
            1,
            declare.into(),
            "01 00 01 00 00 00 0D 00 32 00 0A 00 00 01 71 02 00 00 00 00 CE",
        );
    }

    #[test]
    fn declare_with_ttl_vector_9() {
        let mut arguments = FieldTable::new();
        arguments.insert("x-message-ttl", 60_000i32);
        let declare = QueueDeclare {
            queue: ShortStr::from_static("q"),
            durable: true,
            arguments,
            ..Default::default()
        };
        let payload = check_vector(
            1,
            declare.into(),
            "01 00 01 00 00 00 20 00 32 00 0A 00 00 01 71 02 00 00 00 13 0D 78 2D 6D 65 73 73 61
             67 65 2D 74 74 6C 49 00 00 EA 60 CE",
        );
        let Ok(Method::QueueDeclare(back)) = Method::decode(&payload) else {
            panic!("not a queue.declare");
        };
        assert_eq!(
            back.arguments.get("x-message-ttl"),
            Some(&FieldValue::I32(60_000))
        );
    }

    fn declare_with_bits(n: u8) -> QueueDeclare {
        QueueDeclare {
            queue: ShortStr::from_static("q"),
            passive: n & 0x01 != 0,
            durable: n & 0x02 != 0,
            exclusive: n & 0x04 != 0,
            auto_delete: n & 0x08 != 0,
            no_wait: n & 0x10 != 0,
            arguments: FieldTable::new(),
        }
    }

    /// The bits octet follows ids (4), ticket (2) and `"q"` (2).
    const DECLARE_BITS_AT: usize = 8;

    #[test]
    fn every_declare_bit_combination_round_trips() {
        for n in 0..32 {
            let declare = declare_with_bits(n);
            let mut dst = BytesMut::new();
            Method::from(declare.clone()).encode(&mut dst);
            assert_eq!(dst[DECLARE_BITS_AT], n, "bits of {declare:?}");
            round_trip(declare.into());
        }
    }

    #[test]
    fn each_declare_bit_has_its_mask() {
        let q = || ShortStr::from_static("q");
        let cases = [
            (
                QueueDeclare {
                    queue: q(),
                    passive: true,
                    ..Default::default()
                },
                0x01,
            ),
            (
                QueueDeclare {
                    queue: q(),
                    durable: true,
                    ..Default::default()
                },
                0x02,
            ),
            (
                QueueDeclare {
                    queue: q(),
                    exclusive: true,
                    ..Default::default()
                },
                0x04,
            ),
            (
                QueueDeclare {
                    queue: q(),
                    auto_delete: true,
                    ..Default::default()
                },
                0x08,
            ),
            (
                QueueDeclare {
                    queue: q(),
                    no_wait: true,
                    ..Default::default()
                },
                0x10,
            ),
        ];
        for (declare, mask) in cases {
            let mut dst = BytesMut::new();
            Method::from(declare.clone()).encode(&mut dst);
            assert_eq!(&dst[DECLARE_BITS_AT..], &[mask, 0, 0, 0, 0], "{declare:?}");
        }
    }

    #[test]
    fn delete_bits() {
        let delete = QueueDelete {
            if_empty: true,
            no_wait: true,
            ..Default::default()
        };
        let mut dst = BytesMut::new();
        Method::from(delete).encode(&mut dst);
        assert_eq!(&dst[..], b"\x00\x32\x00\x28\x00\x00\x00\x06");
    }

    #[test]
    fn unbind_has_no_bits_octet() {
        let mut dst = BytesMut::new();
        Method::from(QueueUnbind::default()).encode(&mut dst);
        assert_eq!(
            &dst[..],
            b"\x00\x32\x00\x32\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        );
    }

    #[test]
    fn declare_ok_queue_is_a_slice_of_the_payload() {
        let payload =
            Bytes::from_static(b"\x00\x32\x00\x0b\x03abc\x00\x00\x00\x01\x00\x00\x00\x02");
        let Ok(Method::QueueDeclareOk(ok)) = Method::decode(&payload) else {
            panic!("not a queue.declare-ok");
        };
        assert_eq!((ok.message_count, ok.consumer_count), (1, 2));
        assert!(
            payload
                .as_ptr_range()
                .contains(&ok.queue.as_bytes().as_ptr())
        );
    }
}
