//! The `access` class (30): deprecated; RabbitMQ answers `access.request` with a ticket it then
//! ignores. Only here so that every method decodes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::method::Args;
use crate::frame::wire::{
    PResult, bit, flag, octet, put_short_str, short, short_str, short_str_len,
};
use crate::types::ShortStr;

const REQUEST_EXCLUSIVE: u8 = 0x01;
const REQUEST_PASSIVE: u8 = 0x02;
const REQUEST_ACTIVE: u8 = 0x04;
const REQUEST_WRITE: u8 = 0x08;
const REQUEST_READ: u8 = 0x10;

/// `access.request`: ask for an access ticket to a realm (deprecated; do not send).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRequest {
    /// The realm, such as `/data`.
    pub realm: ShortStr,
    /// Ask for exclusive access.
    pub exclusive: bool,
    /// Ask for passive access.
    pub passive: bool,
    /// Ask for active access.
    pub active: bool,
    /// Ask for write access.
    pub write: bool,
    /// Ask for read access.
    pub read: bool,
}

impl Args for AccessRequest {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, realm) = short_str(src, i)?;
        let (i, bits) = octet(i)?;
        Ok((
            i,
            Self {
                realm,
                exclusive: bit(bits, REQUEST_EXCLUSIVE),
                passive: bit(bits, REQUEST_PASSIVE),
                active: bit(bits, REQUEST_ACTIVE),
                write: bit(bits, REQUEST_WRITE),
                read: bit(bits, REQUEST_READ),
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.realm);
        dst.put_u8(
            flag(self.exclusive, REQUEST_EXCLUSIVE)
                | flag(self.passive, REQUEST_PASSIVE)
                | flag(self.active, REQUEST_ACTIVE)
                | flag(self.write, REQUEST_WRITE)
                | flag(self.read, REQUEST_READ),
        );
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.realm) + 1
    }
}

/// `access.request-ok`: grants a ticket. The `ticket` is deprecated like the class: it is
/// skipped when read (RabbitMQ sends 1) and written as 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRequestOk;

impl Args for AccessRequestOk {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _ticket) = short(i)?;
        Ok((i, Self))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(0);
    }
    fn encoded_len(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::method::Method;
    use crate::frame::methods::testing::round_trip;

    #[test]
    fn every_access_method_round_trips() {
        round_trip(
            AccessRequest {
                realm: ShortStr::from_static("/data"),
                exclusive: true,
                passive: false,
                active: true,
                write: false,
                read: true,
            }
            .into(),
        );
        round_trip(AccessRequestOk.into());
    }

    #[test]
    fn request_bits_are_packed_in_order() {
        let request = AccessRequest {
            read: true,
            passive: true,
            ..Default::default()
        };
        let mut dst = BytesMut::new();
        Method::from(request).encode(&mut dst);
        assert_eq!(&dst[..], b"\x00\x1e\x00\x0a\x00\x12");
    }

    #[test]
    fn request_ok_skips_rabbitmqs_ticket() {
        let payload = Bytes::from_static(b"\x00\x1e\x00\x0b\x00\x01");
        assert_eq!(Method::decode(&payload), Ok(AccessRequestOk.into()));
    }
}
