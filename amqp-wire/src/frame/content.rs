//! The content header: body size and the 14 basic properties.
//!
//! ```text
//! class-id:u16 | weight:u16 (0) | body-size:u64 | property-flags:u16 | values of the set flags
//! ```
//! The first property is flag bit 15, the fourteenth bit 2. Bit 0 would announce another flag
//! word; basic has only 14 properties, so it is never set here and skipped when read.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{
    self, Fail, PResult, fail, longlong, named, octet, put_short_str, short, short_str,
};
use crate::error::DecodeError;
use crate::table::FieldTable;
use crate::types::ShortStr;

/// The class id of `basic`, the only class with content in 0-9-1.
pub const BASIC_CLASS_ID: u16 = 60;

/// The 14 properties of a `basic` message. Every one is optional.
///
/// ```
/// use amqp_wire::{BasicProperties, ShortStr};
/// let props = BasicProperties {
///     content_type: Some(ShortStr::from_static("application/json")),
///     delivery_mode: Some(BasicProperties::PERSISTENT),
///     ..Default::default()
/// };
/// assert!(props.is_persistent());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicProperties {
    /// MIME content type.
    pub content_type: Option<ShortStr>,
    /// MIME content encoding.
    pub content_encoding: Option<ShortStr>,
    /// Application headers (and RabbitMQ's `x-death`, `CC`, `BCC`, `x-stream-offset`, ...).
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// Priority, 0 to 9 in the spec (RabbitMQ: up to the queue's `x-max-priority`).
    pub priority: Option<u8>,
    /// Application correlation id, e.g. to match RPC replies.
    pub correlation_id: Option<ShortStr>,
    /// Where to send a reply.
    pub reply_to: Option<ShortStr>,
    /// Per-message TTL in milliseconds, as a decimal string.
    pub expiration: Option<ShortStr>,
    /// Application message id.
    pub message_id: Option<ShortStr>,
    /// POSIX seconds.
    pub timestamp: Option<u64>,
    /// Message type name (`type` in the spec).
    pub kind: Option<ShortStr>,
    /// The user that published; RabbitMQ checks it against the connection's user.
    pub user_id: Option<ShortStr>,
    /// The publishing application.
    pub app_id: Option<ShortStr>,
    /// Reserved; leave unset.
    pub cluster_id: Option<ShortStr>,
}

mod flags {
    pub(super) const CONTENT_TYPE: u16 = 1 << 15;
    pub(super) const CONTENT_ENCODING: u16 = 1 << 14;
    pub(super) const HEADERS: u16 = 1 << 13;
    pub(super) const DELIVERY_MODE: u16 = 1 << 12;
    pub(super) const PRIORITY: u16 = 1 << 11;
    pub(super) const CORRELATION_ID: u16 = 1 << 10;
    pub(super) const REPLY_TO: u16 = 1 << 9;
    pub(super) const EXPIRATION: u16 = 1 << 8;
    pub(super) const MESSAGE_ID: u16 = 1 << 7;
    pub(super) const TIMESTAMP: u16 = 1 << 6;
    pub(super) const TYPE: u16 = 1 << 5;
    pub(super) const USER_ID: u16 = 1 << 4;
    pub(super) const APP_ID: u16 = 1 << 3;
    pub(super) const CLUSTER_ID: u16 = 1 << 2;
    /// Another flag word follows.
    pub(super) const CONTINUATION: u16 = 1;
    /// The properties whose decoded values are slices of the payload: strings and the table.
    pub(super) const SHARED: u16 = CONTENT_TYPE
        | CONTENT_ENCODING
        | HEADERS
        | CORRELATION_ID
        | REPLY_TO
        | EXPIRATION
        | MESSAGE_ID
        | TYPE
        | USER_ID
        | APP_ID
        | CLUSTER_ID;
}

impl BasicProperties {
    /// `delivery_mode` for a message the broker keeps on disk.
    pub const PERSISTENT: u8 = 2;
    /// `delivery_mode` for a message kept in memory only.
    pub const TRANSIENT: u8 = 1;

    /// True when `delivery_mode` is 2.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(Self::PERSISTENT)
    }

    /// The property-flags word for the properties that are set.
    pub fn flags(&self) -> u16 {
        use flags::*;
        let set = |present: bool, bit: u16| if present { bit } else { 0 };
        set(self.content_type.is_some(), CONTENT_TYPE)
            | set(self.content_encoding.is_some(), CONTENT_ENCODING)
            | set(self.headers.is_some(), HEADERS)
            | set(self.delivery_mode.is_some(), DELIVERY_MODE)
            | set(self.priority.is_some(), PRIORITY)
            | set(self.correlation_id.is_some(), CORRELATION_ID)
            | set(self.reply_to.is_some(), REPLY_TO)
            | set(self.expiration.is_some(), EXPIRATION)
            | set(self.message_id.is_some(), MESSAGE_ID)
            | set(self.timestamp.is_some(), TIMESTAMP)
            | set(self.kind.is_some(), TYPE)
            | set(self.user_id.is_some(), USER_ID)
            | set(self.app_id.is_some(), APP_ID)
            | set(self.cluster_id.is_some(), CLUSTER_ID)
    }

    /// The exact size of the flags word and the values.
    pub fn encoded_len(&self) -> usize {
        let s = |v: &Option<ShortStr>| v.as_ref().map_or(0, wire::short_str_len);
        2 + s(&self.content_type)
            + s(&self.content_encoding)
            + self.headers.as_ref().map_or(0, FieldTable::encoded_len)
            + usize::from(self.delivery_mode.is_some())
            + usize::from(self.priority.is_some())
            + s(&self.correlation_id)
            + s(&self.reply_to)
            + s(&self.expiration)
            + s(&self.message_id)
            + self.timestamp.map_or(0, |_| 8)
            + s(&self.kind)
            + s(&self.user_id)
            + s(&self.app_id)
            + s(&self.cluster_id)
    }

    /// Writes the flags word and the values of the set properties, in property order.
    pub fn encode(&self, dst: &mut BytesMut) {
        let put = |dst: &mut BytesMut, v: &Option<ShortStr>| {
            if let Some(v) = v {
                put_short_str(dst, v);
            }
        };
        dst.put_u16(self.flags());
        put(dst, &self.content_type);
        put(dst, &self.content_encoding);
        if let Some(h) = &self.headers {
            h.encode(dst);
        }
        if let Some(m) = self.delivery_mode {
            dst.put_u8(m);
        }
        if let Some(p) = self.priority {
            dst.put_u8(p);
        }
        put(dst, &self.correlation_id);
        put(dst, &self.reply_to);
        put(dst, &self.expiration);
        put(dst, &self.message_id);
        if let Some(t) = self.timestamp {
            dst.put_u64(t);
        }
        put(dst, &self.kind);
        put(dst, &self.user_id);
        put(dst, &self.app_id);
        put(dst, &self.cluster_id);
    }

    /// Parses the flags word and the values it announces into `self`, which is empty.
    ///
    /// In place rather than returned: the properties are 368 octets, and each `Result` they
    /// would travel through is another copy of them, per delivery.
    #[inline(always)]
    fn decode_into<'a>(&mut self, src: &Bytes, i: &'a [u8]) -> PResult<'a, ()> {
        use flags::*;
        let (mut i, flags) = short(i)?;
        // Skip continuation words: basic has no properties beyond the first word, so a set
        // flag in one of them names a property that cannot be parsed.
        let mut more = flags & CONTINUATION != 0;
        while more {
            let (rest, word) = short(i)?;
            if word & !CONTINUATION != 0 {
                return fail(DecodeError::Malformed("property flags"));
            }
            more = word & CONTINUATION != 0;
            i = rest;
        }
        let p = self;
        let string = |i| short_str(src, i);
        let table = |i| FieldTable::decode_from(src, i);
        i = optional(flags & CONTENT_TYPE, i, &mut p.content_type, string)?;
        i = optional(flags & CONTENT_ENCODING, i, &mut p.content_encoding, string)?;
        i = optional(flags & HEADERS, i, &mut p.headers, table)?;
        i = optional(flags & DELIVERY_MODE, i, &mut p.delivery_mode, octet)?;
        i = optional(flags & PRIORITY, i, &mut p.priority, octet)?;
        i = optional(flags & CORRELATION_ID, i, &mut p.correlation_id, string)?;
        i = optional(flags & REPLY_TO, i, &mut p.reply_to, string)?;
        i = optional(flags & EXPIRATION, i, &mut p.expiration, string)?;
        i = optional(flags & MESSAGE_ID, i, &mut p.message_id, string)?;
        i = optional(flags & TIMESTAMP, i, &mut p.timestamp, longlong)?;
        i = optional(flags & TYPE, i, &mut p.kind, string)?;
        i = optional(flags & USER_ID, i, &mut p.user_id, string)?;
        i = optional(flags & APP_ID, i, &mut p.app_id, string)?;
        i = optional(flags & CLUSTER_ID, i, &mut p.cluster_id, string)?;
        Ok((i, ()))
    }
}

/// Parses a property into `slot` when its flag is set (`flag` is non-zero); otherwise leaves
/// the slot empty and consumes nothing.
#[inline(always)]
fn optional<'a, T>(
    flag: u16,
    i: &'a [u8],
    slot: &mut Option<T>,
    parse: impl FnOnce(&'a [u8]) -> PResult<'a, T>,
) -> Result<&'a [u8], nom::Err<Fail>> {
    if flag == 0 {
        return Ok(i);
    }
    let (i, value) = parse(i)?;
    *slot = Some(value);
    Ok(i)
}

/// A content header frame's payload for `basic` content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContentHeader {
    /// The size of the whole body that follows, in octets, over all body frames.
    pub body_size: u64,
    /// The message's properties.
    pub properties: BasicProperties,
}

impl ContentHeader {
    /// The exact size of the payload [`ContentHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        12 + self.properties.encoded_len()
    }

    /// Writes the payload: class 60, weight 0, body size, properties.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u16(BASIC_CLASS_ID);
        dst.put_u16(0);
        dst.put_u64(self.body_size);
        self.properties.encode(dst);
    }

    /// Decodes a header frame's whole payload; strings and headers are slices of `payload`.
    ///
    /// # Errors
    /// [`DecodeError::UnknownContentClass`] for a class other than basic,
    /// [`DecodeError::ContentWeight`] for a non-zero weight, otherwise a syntax error.
    pub fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut header = Self::default();
        header.decode_into(payload, payload)?;
        Ok(header)
    }

    /// True when the decoded header would hold slices of `payload` (a string or table
    /// property is present). When false, the payload need not be a [`Bytes`]: the codec
    /// parses it where it lies and takes no reference count.
    ///
    /// A payload too short to hold the flags gives false, and its parse fails.
    #[inline]
    pub(crate) fn shares_payload(payload: &[u8]) -> bool {
        match payload.get(12..14) {
            Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]) & flags::SHARED != 0,
            _ => false,
        }
    }

    /// [`ContentHeader::decode`] of `payload` into `self`, which must be empty (`default()`);
    /// on an error `self` holds what was parsed before it. Strings and the table are sliced
    /// from `src`, which `payload` must lie in whenever [`ContentHeader::shares_payload`] says
    /// so (otherwise `src` is never used, and may be empty).
    ///
    /// In place rather than returned: the codec decodes into the `Frame` it returns, so the
    /// properties are not copied through each `Result` on the way.
    #[inline(always)]
    pub(crate) fn decode_into(&mut self, src: &Bytes, payload: &[u8]) -> Result<(), DecodeError> {
        wire::finish(self.parse(src, payload))
    }

    #[inline(always)]
    fn parse<'a>(&mut self, src: &Bytes, i: &'a [u8]) -> PResult<'a, ()> {
        let (i, class_id) = short(i)?;
        if class_id != BASIC_CLASS_ID {
            return fail(DecodeError::UnknownContentClass(class_id));
        }
        let (i, weight) = short(i)?;
        if weight != 0 {
            return fail(DecodeError::ContentWeight(weight));
        }
        let (i, body_size) = longlong(i)?;
        self.body_size = body_size;
        named(self.properties.decode_into(src, i), "basic properties")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_set() -> BasicProperties {
        BasicProperties {
            content_type: Some(ShortStr::from_static("text/plain")),
            content_encoding: Some(ShortStr::from_static("gzip")),
            headers: Some([("k", 1i32)].into_iter().collect()),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some(ShortStr::from_static("c-1")),
            reply_to: Some(ShortStr::from_static("amq.rabbitmq.reply-to")),
            expiration: Some(ShortStr::from_static("60000")),
            message_id: Some(ShortStr::from_static("m-1")),
            timestamp: Some(1_700_000_000),
            kind: Some(ShortStr::from_static("order.created")),
            user_id: Some(ShortStr::from_static("guest")),
            app_id: Some(ShortStr::from_static("tests")),
            cluster_id: Some(ShortStr::from_static("c")),
        }
    }

    fn round_trip(h: &ContentHeader) {
        let mut dst = BytesMut::new();
        h.encode(&mut dst);
        assert_eq!(dst.len(), h.encoded_len());
        assert_eq!(ContentHeader::decode(&dst.freeze()).as_ref(), Ok(h));
    }

    #[test]
    fn vector_5_persistent_body_of_five() {
        let payload =
            Bytes::from_static(b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x10\x00\x02");
        let h = ContentHeader::decode(&payload).unwrap();
        assert_eq!(h.body_size, 5);
        assert_eq!(
            h.properties,
            BasicProperties {
                delivery_mode: Some(2),
                ..Default::default()
            }
        );
        let mut dst = BytesMut::new();
        h.encode(&mut dst);
        assert_eq!(dst, payload);
    }

    #[test]
    fn vector_19_content_type_and_delivery_mode() {
        let payload = Bytes::from_static(
            b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x90\x00\x0atext/plain\x02",
        );
        let h = ContentHeader::decode(&payload).unwrap();
        assert_eq!(h.properties.content_type.as_ref().unwrap(), "text/plain");
        assert_eq!(h.properties.delivery_mode, Some(2));
        let mut dst = BytesMut::new();
        h.encode(&mut dst);
        assert_eq!(dst, payload);
    }

    #[test]
    fn each_property_alone_and_all_together_round_trip() {
        let all = all_set();
        round_trip(&ContentHeader {
            body_size: 7,
            properties: all.clone(),
        });
        assert_eq!(all.flags(), 0xfffc);
        // Each property alone: clear all others by taking one field at a time.
        let singles = [
            BasicProperties {
                content_type: all.content_type.clone(),
                ..Default::default()
            },
            BasicProperties {
                content_encoding: all.content_encoding.clone(),
                ..Default::default()
            },
            BasicProperties {
                headers: all.headers.clone(),
                ..Default::default()
            },
            BasicProperties {
                delivery_mode: all.delivery_mode,
                ..Default::default()
            },
            BasicProperties {
                priority: all.priority,
                ..Default::default()
            },
            BasicProperties {
                correlation_id: all.correlation_id.clone(),
                ..Default::default()
            },
            BasicProperties {
                reply_to: all.reply_to.clone(),
                ..Default::default()
            },
            BasicProperties {
                expiration: all.expiration.clone(),
                ..Default::default()
            },
            BasicProperties {
                message_id: all.message_id.clone(),
                ..Default::default()
            },
            BasicProperties {
                timestamp: all.timestamp,
                ..Default::default()
            },
            BasicProperties {
                kind: all.kind.clone(),
                ..Default::default()
            },
            BasicProperties {
                user_id: all.user_id.clone(),
                ..Default::default()
            },
            BasicProperties {
                app_id: all.app_id.clone(),
                ..Default::default()
            },
            BasicProperties {
                cluster_id: all.cluster_id.clone(),
                ..Default::default()
            },
        ];
        for (n, props) in singles.into_iter().enumerate() {
            assert_eq!(props.flags(), 1 << (15 - n), "property {n}");
            round_trip(&ContentHeader {
                body_size: 0,
                properties: props,
            });
        }
    }

    #[test]
    fn shared_flags_are_the_string_and_table_properties() {
        let all = all_set();
        let shared = BasicProperties {
            delivery_mode: None,
            priority: None,
            timestamp: None,
            ..all.clone()
        };
        assert_eq!(shared.flags(), flags::SHARED);
        let mut dst = BytesMut::new();
        ContentHeader {
            body_size: 1,
            properties: BasicProperties {
                delivery_mode: all.delivery_mode,
                priority: all.priority,
                timestamp: all.timestamp,
                ..Default::default()
            },
        }
        .encode(&mut dst);
        assert!(!ContentHeader::shares_payload(&dst));
        // Parsed where it lies, with nothing to slice strings from.
        let mut h = ContentHeader::default();
        h.decode_into(&Bytes::new(), &dst).unwrap();
        assert_eq!(h.properties.timestamp, all.timestamp);
        for one in [flags::CONTENT_TYPE, flags::HEADERS, flags::CLUSTER_ID] {
            let mut payload = dst.clone();
            payload[12..14].copy_from_slice(&one.to_be_bytes());
            assert!(ContentHeader::shares_payload(&payload));
        }
        assert!(!ContentHeader::shares_payload(&dst[..13]));
    }

    #[test]
    fn continuation_words_are_skipped_when_empty() {
        let payload = Bytes::from_static(
            b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x10\x01\x00\x00\x02",
        );
        let h = ContentHeader::decode(&payload).unwrap();
        assert_eq!(h.properties.delivery_mode, Some(2));
    }

    #[test]
    fn a_flag_in_a_continuation_word_is_malformed() {
        let payload =
            Bytes::from_static(b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x80\x00");
        assert_eq!(
            ContentHeader::decode(&payload),
            Err(DecodeError::Malformed("property flags"))
        );
    }

    #[test]
    fn wrong_class_and_weight_are_rejected() {
        let class = Bytes::from_static(b"\x00\x3d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(
            ContentHeader::decode(&class),
            Err(DecodeError::UnknownContentClass(61))
        );
        let weight =
            Bytes::from_static(b"\x00\x3c\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(
            ContentHeader::decode(&weight),
            Err(DecodeError::ContentWeight(1))
        );
    }

    #[test]
    fn a_truncated_property_names_the_properties() {
        let payload =
            Bytes::from_static(b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x00\x05ab");
        assert_eq!(
            ContentHeader::decode(&payload),
            Err(DecodeError::Malformed("basic properties"))
        );
    }
}
