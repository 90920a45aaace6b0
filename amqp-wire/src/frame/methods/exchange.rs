//! The `exchange` class (40).

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::method::Args;
use crate::frame::wire::{
    PResult, bit, flag, octet, put_short_str, short, short_str, short_str_len,
};
use crate::table::FieldTable;
use crate::types::ShortStr;

const DECLARE_PASSIVE: u8 = 0x01;
const DECLARE_DURABLE: u8 = 0x02;
const DECLARE_AUTO_DELETE: u8 = 0x04;
const DECLARE_INTERNAL: u8 = 0x08;
const DECLARE_NO_WAIT: u8 = 0x10;

const DELETE_IF_UNUSED: u8 = 0x01;
const DELETE_NO_WAIT: u8 = 0x02;

const BIND_NO_WAIT: u8 = 0x01;
const UNBIND_NO_WAIT: u8 = 0x01;

/// `exchange.declare`: create an exchange, or check that one exists (`passive`).
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeDeclare {
    /// The exchange's name.
    pub exchange: ShortStr,
    /// The exchange type (the spec's `type`): `direct`, `fanout`, `topic`, `headers`, ...
    pub kind: ShortStr,
    /// Only check that the exchange exists; fail with 404 if not.
    pub passive: bool,
    /// Survive a broker restart.
    pub durable: bool,
    /// Delete the exchange when its last binding goes.
    pub auto_delete: bool,
    /// Refuse publishes from clients; only exchange-to-exchange bindings route into it.
    pub internal: bool,
    /// Do not answer with `exchange.declare-ok`.
    pub no_wait: bool,
    /// Extra arguments, such as `alternate-exchange`.
    pub arguments: FieldTable,
}

impl Default for ExchangeDeclare {
    fn default() -> Self {
        Self {
            exchange: ShortStr::new(),
            kind: ShortStr::from_static("direct"),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            no_wait: false,
            arguments: FieldTable::new(),
        }
    }
}

impl Args for ExchangeDeclare {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, kind) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        let (i, arguments) = FieldTable::decode_from(src, i)?;
        Ok((
            i,
            Self {
                exchange,
                kind,
                passive: bit(bits, DECLARE_PASSIVE),
                durable: bit(bits, DECLARE_DURABLE),
                auto_delete: bit(bits, DECLARE_AUTO_DELETE),
                internal: bit(bits, DECLARE_INTERNAL),
                no_wait: bit(bits, DECLARE_NO_WAIT),
                arguments,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.exchange);
        put_short_str(dst, &self.kind);
        dst.put_u8(
            flag(self.passive, DECLARE_PASSIVE)
                | flag(self.durable, DECLARE_DURABLE)
                | flag(self.auto_delete, DECLARE_AUTO_DELETE)
                | flag(self.internal, DECLARE_INTERNAL)
                | flag(self.no_wait, DECLARE_NO_WAIT),
        );
        self.arguments.encode(dst);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.exchange)
            + short_str_len(&self.kind)
            + 1
            + self.arguments.encoded_len()
    }
}

/// `exchange.declare-ok`: the exchange exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeDeclareOk;

/// `exchange.delete`: delete an exchange and its bindings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeDelete {
    /// The exchange's name.
    pub exchange: ShortStr,
    /// Only delete it if it has no bindings; fail with 406 otherwise.
    pub if_unused: bool,
    /// Do not answer with `exchange.delete-ok`.
    pub no_wait: bool,
}

impl Args for ExchangeDelete {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, exchange) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                exchange,
                if_unused: bit(bits, DELETE_IF_UNUSED),
                no_wait: bit(bits, DELETE_NO_WAIT),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.exchange);
        dst.put_u8(flag(self.if_unused, DELETE_IF_UNUSED) | flag(self.no_wait, DELETE_NO_WAIT));
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.exchange) + 1
    }
}

/// `exchange.delete-ok`: the exchange is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeDeleteOk;

/// `exchange.bind`: bind exchange `destination` to exchange `source` (a RabbitMQ extension).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeBind {
    /// The exchange that receives the messages.
    pub destination: ShortStr,
    /// The exchange the messages come from.
    pub source: ShortStr,
    /// The binding key.
    pub routing_key: ShortStr,
    /// Do not answer with `exchange.bind-ok`.
    pub no_wait: bool,
    /// Extra arguments, such as the match of a headers exchange.
    pub arguments: FieldTable,
}

impl Args for ExchangeBind {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, destination) = short_str(src, i)?;
        let (i, source) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        let (i, arguments) = FieldTable::decode_from(src, i)?;
        let no_wait = bit(bits, BIND_NO_WAIT);
        Ok((
            i,
            Self {
                destination,
                source,
                routing_key,
                no_wait,
                arguments,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.destination);
        put_short_str(dst, &self.source);
        put_short_str(dst, &self.routing_key);
        dst.put_u8(flag(self.no_wait, BIND_NO_WAIT));
        self.arguments.encode(dst);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.destination)
            + short_str_len(&self.source)
            + short_str_len(&self.routing_key)
            + 1
            + self.arguments.encoded_len()
    }
}

/// `exchange.bind-ok`: the binding exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeBindOk;

/// `exchange.unbind`: remove an exchange-to-exchange binding (a RabbitMQ extension).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeUnbind {
    /// The exchange that received the messages.
    pub destination: ShortStr,
    /// The exchange the messages came from.
    pub source: ShortStr,
    /// The binding key.
    pub routing_key: ShortStr,
    /// Do not answer with `exchange.unbind-ok`.
    pub no_wait: bool,
    /// The binding's arguments, as given to `exchange.bind`.
    pub arguments: FieldTable,
}

impl Args for ExchangeUnbind {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        let (i, destination) = short_str(src, i)?;
        let (i, source) = short_str(src, i)?;
        let (i, routing_key) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        let (i, arguments) = FieldTable::decode_from(src, i)?;
        let no_wait = bit(bits, UNBIND_NO_WAIT);
        Ok((
            i,
            Self {
                destination,
                source,
                routing_key,
                no_wait,
                arguments,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
        put_short_str(dst, &self.destination);
        put_short_str(dst, &self.source);
        put_short_str(dst, &self.routing_key);
        dst.put_u8(flag(self.no_wait, UNBIND_NO_WAIT));
        self.arguments.encode(dst);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.destination)
            + short_str_len(&self.source)
            + short_str_len(&self.routing_key)
            + 1
            + self.arguments.encoded_len()
    }
}

/// `exchange.unbind-ok`: the binding is gone. Its method id is 51, not 41.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeUnbindOk;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::method::Method;
    use crate::frame::methods::testing::round_trip;

    fn args() -> FieldTable {
        let mut args = FieldTable::new();
        args.insert("alternate-exchange", "ae");
        args
    }

    #[test]
    fn every_exchange_method_round_trips() {
        round_trip(
            ExchangeDeclare {
                exchange: ShortStr::from_static("logs"),
                kind: ShortStr::from_static("topic"),
                passive: false,
                durable: true,
                auto_delete: true,
                internal: false,
                no_wait: true,
                arguments: args(),
            }
            .into(),
        );
        round_trip(ExchangeDeclareOk.into());
        round_trip(
            ExchangeDelete {
                exchange: ShortStr::from_static("logs"),
                if_unused: true,
                no_wait: false,
            }
            .into(),
        );
        round_trip(ExchangeDeleteOk.into());
        round_trip(
            ExchangeBind {
                destination: ShortStr::from_static("dst"),
                source: ShortStr::from_static("src"),
                routing_key: ShortStr::from_static("a.#"),
                no_wait: true,
                arguments: args(),
            }
            .into(),
        );
        round_trip(ExchangeBindOk.into());
        round_trip(
            ExchangeUnbind {
                destination: ShortStr::from_static("dst"),
                source: ShortStr::from_static("src"),
                routing_key: ShortStr::from_static("a.#"),
                no_wait: false,
                arguments: args(),
            }
            .into(),
        );
        round_trip(ExchangeUnbindOk.into());
    }

    #[test]
    fn default_kind_is_direct() {
        assert_eq!(ExchangeDeclare::default().kind, "direct");
    }

    fn declare_with_bits(n: u8) -> ExchangeDeclare {
        ExchangeDeclare {
            exchange: ShortStr::from_static("x"),
            kind: ShortStr::from_static("fanout"),
            passive: n & 0x01 != 0,
            durable: n & 0x02 != 0,
            auto_delete: n & 0x04 != 0,
            internal: n & 0x08 != 0,
            no_wait: n & 0x10 != 0,
            arguments: FieldTable::new(),
        }
    }

    /// The bits octet follows ids (4), ticket (2), `"x"` (2) and `"fanout"` (7).
    const DECLARE_BITS_AT: usize = 15;

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
        let cases = [
            (
                ExchangeDeclare {
                    passive: true,
                    ..Default::default()
                },
                0x01,
            ),
            (
                ExchangeDeclare {
                    durable: true,
                    ..Default::default()
                },
                0x02,
            ),
            (
                ExchangeDeclare {
                    auto_delete: true,
                    ..Default::default()
                },
                0x04,
            ),
            (
                ExchangeDeclare {
                    internal: true,
                    ..Default::default()
                },
                0x08,
            ),
            (
                ExchangeDeclare {
                    no_wait: true,
                    ..Default::default()
                },
                0x10,
            ),
        ];
        for (declare, mask) in cases {
            let mut dst = BytesMut::new();
            Method::from(declare.clone()).encode(&mut dst);
            // ids (4), ticket (2), "" (1), "direct" (7): then the bits, then an empty table.
            assert_eq!(&dst[14..], &[mask, 0, 0, 0, 0], "{declare:?}");
        }
    }

    #[test]
    fn delete_bits() {
        let delete = ExchangeDelete {
            exchange: ShortStr::new(),
            if_unused: false,
            no_wait: true,
        };
        let mut dst = BytesMut::new();
        Method::from(delete).encode(&mut dst);
        assert_eq!(&dst[..], b"\x00\x28\x00\x14\x00\x00\x00\x02");
    }

    #[test]
    fn unbind_ok_is_method_51() {
        let payload = Bytes::from_static(b"\x00\x28\x00\x33");
        assert_eq!(Method::decode(&payload), Ok(ExchangeUnbindOk.into()));
        let payload = Bytes::from_static(b"\x00\x28\x00\x29");
        assert!(Method::decode(&payload).is_err());
    }

    #[test]
    fn declare_strings_are_slices_of_the_payload() {
        let mut dst = BytesMut::new();
        Method::from(declare_with_bits(0)).encode(&mut dst);
        let payload = dst.freeze();
        let Ok(Method::ExchangeDeclare(back)) = Method::decode(&payload) else {
            panic!("not an exchange.declare");
        };
        let range = payload.as_ptr_range();
        assert!(range.contains(&back.exchange.as_bytes().as_ptr()));
        assert!(range.contains(&back.kind.as_bytes().as_ptr()));
    }
}
