//! Field tables and arrays, with the type tags RabbitMQ actually uses.
//!
//! The 0-9-1 grammar and RabbitMQ disagree on some tags; RabbitMQ's (the older Qpid letters, as
//! RabbitMQ's errata to the spec list them) win, since that is the peer we talk to:
//!
//! | tag | value              | note                                          |
//! |-----|--------------------|-----------------------------------------------|
//! | `t` | bool               |                                               |
//! | `b` | i8                 |                                               |
//! | `B` | u8                 |                                               |
//! | `s` | **i16**            | the grammar says short string; RabbitMQ: i16  |
//! | `u` | u16                |                                               |
//! | `I` | i32                |                                               |
//! | `i` | u32                |                                               |
//! | `l` | **i64**            | the grammar says unsigned                     |
//! | `L` | i64, decode only   | RabbitMQ parses it, never emits it            |
//! | `f` | f32                |                                               |
//! | `d` | f64                |                                               |
//! | `D` | decimal            | scale octet, then a 32-bit value              |
//! | `S` | long string        |                                               |
//! | `x` | byte array         | RabbitMQ/Qpid extension                       |
//! | `A` | array              | u32 length counted in octets, not elements    |
//! | `T` | timestamp          | u64 seconds                                   |
//! | `F` | nested table       |                                               |
//! | `V` | void               | no payload                                    |
//!
//! Any other tag (the grammar's `U` included) is a [`DecodeError::UnknownFieldType`].

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_f32, be_f64, be_i8, be_i16, be_i32, be_i64};

use crate::error::DecodeError;
use crate::frame::wire::{
    self, PResult, fail, long, long_bytes, octet, put_long_bytes, put_short_str, short, short_str,
    short_str_len,
};
use crate::types::{LongStr, ShortStr};

/// How deep tables and arrays may nest before decoding refuses them: a hostile frame cannot
/// blow the stack. RabbitMQ's own deepest header, `x-death`, nests four levels.
pub const MAX_DEPTH: usize = 32;

/// A decimal: `value / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value. RabbitMQ reads it unsigned; emit non-negative values.
    pub value: u32,
}

/// One value in a field table or array.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s` (RabbitMQ: signed 16-bit, not a short string)
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l` (and `L` when decoding)
    I64(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`
    Decimal(Decimal),
    /// `S`
    LongStr(LongStr),
    /// `x`
    Bytes(Bytes),
    /// `T`: POSIX seconds
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `A`
    Array(FieldArray),
    /// `V`
    Void,
}

impl FieldValue {
    /// The tag this value is written with.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Bool(_) => b't',
            Self::I8(_) => b'b',
            Self::U8(_) => b'B',
            Self::I16(_) => b's',
            Self::U16(_) => b'u',
            Self::I32(_) => b'I',
            Self::U32(_) => b'i',
            Self::I64(_) => b'l',
            Self::F32(_) => b'f',
            Self::F64(_) => b'd',
            Self::Decimal(_) => b'D',
            Self::LongStr(_) => b'S',
            Self::Bytes(_) => b'x',
            Self::Timestamp(_) => b'T',
            Self::Table(_) => b'F',
            Self::Array(_) => b'A',
            Self::Void => b'V',
        }
    }

    /// The value as an `i64`, for any of the integer types (RabbitMQ accepts any of them for
    /// integer x-arguments).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Self::I8(v) => v.into(),
            Self::U8(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I64(v) => v,
            _ => return None,
        })
    }

    /// The value as a string, for `S` values that are UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::LongStr(s) => s.to_str().ok(),
            _ => None,
        }
    }

    /// What a value holds beyond its own size: a nested table's or array's memory.
    fn nested_size(&self) -> usize {
        match self {
            Self::Table(t) => t.decoded_size(),
            Self::Array(a) => a.decoded_size(),
            _ => 0,
        }
    }

    /// The encoded size, tag included.
    fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Void => 0,
            Self::Bool(_) | Self::I8(_) | Self::U8(_) => 1,
            Self::I16(_) | Self::U16(_) => 2,
            Self::I32(_) | Self::U32(_) | Self::F32(_) => 4,
            Self::Decimal(_) => 5,
            Self::I64(_) | Self::F64(_) | Self::Timestamp(_) => 8,
            Self::LongStr(s) => wire::long_str_len(s.as_bytes()),
            Self::Bytes(b) => wire::long_str_len(b),
            Self::Table(t) => t.encoded_len(),
            Self::Array(a) => a.encoded_len(),
        }
    }

    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.tag());
        match self {
            Self::Void => {}
            Self::Bool(v) => dst.put_u8(u8::from(*v)),
            Self::I8(v) => dst.put_i8(*v),
            Self::U8(v) => dst.put_u8(*v),
            Self::I16(v) => dst.put_i16(*v),
            Self::U16(v) => dst.put_u16(*v),
            Self::I32(v) => dst.put_i32(*v),
            Self::U32(v) => dst.put_u32(*v),
            Self::I64(v) => dst.put_i64(*v),
            Self::F32(v) => dst.put_f32(*v),
            Self::F64(v) => dst.put_f64(*v),
            Self::Decimal(d) => {
                dst.put_u8(d.scale);
                dst.put_u32(d.value);
            }
            Self::LongStr(s) => put_long_bytes(dst, s.as_bytes()),
            Self::Bytes(b) => put_long_bytes(dst, b),
            Self::Timestamp(v) => dst.put_u64(*v),
            Self::Table(t) => t.encode(dst),
            Self::Array(a) => a.encode(dst),
        }
    }

    /// Parses a tag and its value. `depth` counts the tables and arrays around this value.
    #[inline]
    fn decode<'a>(src: &Bytes, i: &'a [u8], depth: usize) -> PResult<'a, Self> {
        let (i, tag) = octet(i)?;
        // One commented match, in the order of the table in the module docs.
        match tag {
            b't' => octet(i).map(|(i, v)| (i, Self::Bool(v != 0))),
            b'b' => be_i8(i).map(|(i, v)| (i, Self::I8(v))),
            b'B' => octet(i).map(|(i, v)| (i, Self::U8(v))),
            b's' => be_i16(i).map(|(i, v)| (i, Self::I16(v))), // errata: i16, not a string
            b'u' => short(i).map(|(i, v)| (i, Self::U16(v))),
            b'I' => be_i32(i).map(|(i, v)| (i, Self::I32(v))),
            b'i' => long(i).map(|(i, v)| (i, Self::U32(v))),
            b'l' | b'L' => be_i64(i).map(|(i, v)| (i, Self::I64(v))), // errata: signed
            b'f' => be_f32(i).map(|(i, v)| (i, Self::F32(v))),
            b'd' => be_f64(i).map(|(i, v)| (i, Self::F64(v))),
            b'D' => {
                let (i, scale) = octet(i)?;
                let (i, value) = long(i)?;
                Ok((i, Self::Decimal(Decimal { scale, value })))
            }
            b'S' => long_bytes(src, i).map(|(i, v)| (i, Self::LongStr(LongStr(v)))),
            b'x' => long_bytes(src, i).map(|(i, v)| (i, Self::Bytes(v))),
            b'T' => wire::longlong(i).map(|(i, v)| (i, Self::Timestamp(v))),
            b'F' => FieldTable::decode_nested(src, i, depth + 1).map(|(i, t)| (i, Self::Table(t))),
            b'A' => FieldArray::decode(src, i, depth + 1).map(|(i, a)| (i, Self::Array(a))),
            b'V' => Ok((i, Self::Void)),
            other => fail(DecodeError::UnknownFieldType(other)),
        }
    }
}

macro_rules! field_value_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl From<$ty> for FieldValue {
            fn from(v: $ty) -> Self {
                Self::$variant(v.into())
            }
        }
    )*};
}

field_value_from! {
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
    i64 => I64, f32 => F32, f64 => F64, Decimal => Decimal, LongStr => LongStr,
    &str => LongStr, String => LongStr, Bytes => Bytes, FieldTable => Table, FieldArray => Array,
}

/// Reads the `u32` octet length that starts a table or an array and returns its contents.
fn sized<'a>(i: &'a [u8], depth: usize) -> PResult<'a, &'a [u8]> {
    if depth > MAX_DEPTH {
        return fail(DecodeError::TableTooDeep);
    }
    let (i, len) = long(i)?;
    wire::take(i, len as usize)
}

/// A field table: a map from names to values, kept as the list of entries it came in.
///
/// AMQP tables are maps, and brokers do not keep their order: RabbitMQ 3.x hands headers back
/// in the order they were published, RabbitMQ 4 sorts them by name. So equality (`==`) is a
/// map's: two tables are equal when they hold the same names with equal values, whatever the
/// order, at every level of nesting ([`FieldArray`]s, being lists, do compare in order). Names
/// that appear more than once (only a peer can send those; [`FieldTable::insert`] replaces)
/// compare their values in the order they came. [`FieldTable::iter`] and the encoding keep the
/// order of the entries as they were inserted or received.
///
/// Decoding keeps names and string values as slices of the received frame. Building one:
///
/// ```
/// use amqp_wire::{FieldTable, FieldValue};
/// let mut args = FieldTable::new();
/// args.insert("x-message-ttl", 60_000i32);
/// args.insert("x-queue-type", "quorum");
/// assert_eq!(args.get("x-message-ttl").and_then(FieldValue::as_i64), Some(60_000));
/// assert_eq!(args.get("x-queue-type").and_then(FieldValue::as_str), Some("quorum"));
///
/// // The same entries in another order: an equal table.
/// let mut sorted = FieldTable::new();
/// sorted.insert("x-queue-type", "quorum");
/// sorted.insert("x-message-ttl", 60_000i32);
/// assert_eq!(args, sorted);
/// ```
#[derive(Clone, Debug, Default)]
pub struct FieldTable(Vec<(ShortStr, FieldValue)>);

impl PartialEq for FieldTable {
    /// Map equality: the same names with equal values, in any order (see [`FieldTable`]).
    fn eq(&self, other: &Self) -> bool {
        if self.0.len() != other.0.len() {
            return false;
        }
        if self.0.iter().zip(&other.0).all(|(a, b)| a == b) {
            return true;
        }
        self.by_name() == other.by_name()
    }
}

impl FieldTable {
    /// An empty table (no allocation).
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Sets `name` to `value`, replacing an entry of that name.
    ///
    /// # Panics
    /// When `name` is longer than 255 octets: names are written by the program, not the peer;
    /// use [`FieldTable::insert_short`] with a checked [`ShortStr`] for names from elsewhere.
    pub fn insert(&mut self, name: &str, value: impl Into<FieldValue>) {
        let name = ShortStr::try_from(name).expect("field-table name longer than 255 octets");
        self.insert_short(name, value.into());
    }

    /// Sets `name` to `value`, replacing an entry of that name.
    pub fn insert_short(&mut self, name: ShortStr, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of the first entry called `name`.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Removes and returns the entry called `name`.
    pub fn remove(&mut self, name: &str) -> Option<FieldValue> {
        let at = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(at).1)
    }

    /// The entries, in wire order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ShortStr, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The memory the decoded table holds, in octets: its entries and everything nested in
    /// them (strings count as the slices they are, not the read buffer they point into). A
    /// consumer charges it against its buffer's budget, so a table built to decode large is
    /// paid for at its real size.
    ///
    /// ```
    /// use amqp_wire::FieldTable;
    /// let table: FieldTable = [("k", 1i32)].into_iter().collect();
    /// assert!(table.decoded_size() >= size_of::<FieldTable>());
    /// ```
    pub fn decoded_size(&self) -> usize {
        size_of::<Self>()
            + self.0.capacity() * size_of::<(ShortStr, FieldValue)>()
            + self.0.iter().map(|(_, v)| v.nested_size()).sum::<usize>()
    }

    /// The entries sorted by name; a stable sort, so entries sharing a name keep their order.
    fn by_name(&self) -> Vec<&(ShortStr, FieldValue)> {
        let mut entries: Vec<_> = self.0.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    /// The encoded size, the 4-octet length included.
    pub fn encoded_len(&self) -> usize {
        4 + self
            .0
            .iter()
            .map(|(k, v)| short_str_len(k) + v.encoded_len())
            .sum::<usize>()
    }

    /// Writes the table, its 4-octet length first.
    pub fn encode(&self, dst: &mut BytesMut) {
        let len = self.encoded_len() - 4;
        dst.reserve(len + 4);
        // A table that does not fit a u32 cannot be in a frame; `Frame::encode` refuses those.
        dst.put_u32(len as u32);
        for (k, v) in &self.0 {
            put_short_str(dst, k);
            v.encode(dst);
        }
    }

    /// Decodes a whole table (length included) from `src`, which must hold nothing else.
    ///
    /// Names and string values are slices of `src`.
    ///
    /// # Errors
    /// A [`DecodeError`] for a short or malformed table, an unknown tag or too deep a nesting.
    pub fn decode(src: &Bytes) -> Result<Self, DecodeError> {
        wire::finish(Self::decode_from(src, src))
    }

    /// Parses a table at the top level of a method or header.
    pub(crate) fn decode_from<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        Self::decode_nested(src, i, 0)
    }

    fn decode_nested<'a>(src: &Bytes, i: &'a [u8], depth: usize) -> PResult<'a, Self> {
        let (rest, mut body) = sized(i, depth)?;
        // No capacity from the untrusted length field. A guess from the octets actually there
        // (an entry takes at least 2, typically 20 to 40) spares the first reallocations as
        // the Vec grows (4, then 8 entries: two allocations for a 5-entry table); it is capped,
        // so a dense or hostile table only grows as it really parses.
        let mut entries = Vec::with_capacity((body.len() / 20).min(32));
        while !body.is_empty() {
            let (i, name) = short_str(src, body)?;
            let (i, value) = FieldValue::decode(src, i, depth)?;
            entries.push((name, value));
            body = i;
        }
        Ok((rest, Self(entries)))
    }
}

impl<K: AsRef<str>, V: Into<FieldValue>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut table = Self::new();
        for (k, v) in iter {
            table.insert(k.as_ref(), v);
        }
        table
    }
}

/// A field array: values without names, each with its tag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldArray(pub Vec<FieldValue>);

impl FieldArray {
    /// The memory the decoded array holds, as [`FieldTable::decoded_size`].
    pub fn decoded_size(&self) -> usize {
        size_of::<Self>()
            + self.0.capacity() * size_of::<FieldValue>()
            + self.0.iter().map(FieldValue::nested_size).sum::<usize>()
    }

    fn encoded_len(&self) -> usize {
        4 + self.0.iter().map(FieldValue::encoded_len).sum::<usize>()
    }

    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32((self.encoded_len() - 4) as u32);
        for v in &self.0 {
            v.encode(dst);
        }
    }

    fn decode<'a>(src: &Bytes, i: &'a [u8], depth: usize) -> PResult<'a, Self> {
        let (rest, mut body) = sized(i, depth)?;
        let mut values = Vec::new();
        while !body.is_empty() {
            let (i, value) = FieldValue::decode(src, body, depth)?;
            values.push(value);
            body = i;
        }
        Ok((rest, Self(values)))
    }
}

impl<V: Into<FieldValue>> FromIterator<V> for FieldArray {
    fn from_iter<T: IntoIterator<Item = V>>(iter: T) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(t: &FieldTable) -> Bytes {
        let mut dst = BytesMut::new();
        t.encode(&mut dst);
        assert_eq!(dst.len(), t.encoded_len());
        dst.freeze()
    }

    #[test]
    fn empty_table_is_four_zero_octets() {
        assert_eq!(&encode(&FieldTable::new())[..], &[0, 0, 0, 0]);
        assert_eq!(
            FieldTable::decode(&Bytes::from_static(&[0; 4])),
            Ok(FieldTable::new())
        );
    }

    #[test]
    fn s_is_a_signed_short_and_l_a_signed_long_long() {
        // {"a": s -2, "b": l -1}
        let raw = Bytes::from_static(
            b"\x00\x00\x00\x10\x01as\xff\xfe\x01bl\xff\xff\xff\xff\xff\xff\xff\xff",
        );
        let t = FieldTable::decode(&raw).unwrap();
        assert_eq!(t.get("a"), Some(&FieldValue::I16(-2)));
        assert_eq!(t.get("b"), Some(&FieldValue::I64(-1)));
        assert_eq!(encode(&t), raw);
    }

    #[test]
    fn capital_l_decodes_as_signed_long_long() {
        let raw = Bytes::from_static(b"\x00\x00\x00\x0b\x01aL\xff\xff\xff\xff\xff\xff\xff\xfe");
        assert_eq!(
            FieldTable::decode(&raw).unwrap().get("a"),
            Some(&FieldValue::I64(-2))
        );
    }

    #[test]
    fn unknown_tag_is_a_syntax_error() {
        let raw = Bytes::from_static(b"\x00\x00\x00\x04\x01aU\x00");
        let err = FieldTable::decode(&raw).unwrap_err();
        assert_eq!(err, DecodeError::UnknownFieldType(b'U'));
        assert_eq!(err.reply_code(), crate::ReplyCode::SYNTAX_ERROR);
    }

    #[test]
    fn table_inside_array_inside_table_round_trips() {
        let inner: FieldTable = [("k", "v")].into_iter().collect();
        let array = FieldArray(vec![FieldValue::Table(inner), FieldValue::I32(7)]);
        let outer: FieldTable = [("arr", FieldValue::Array(array))].into_iter().collect();
        let raw = encode(&outer);
        assert_eq!(FieldTable::decode(&raw), Ok(outer));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_without_recursing_further() {
        // An array that holds an array that holds ... 100 deep: each level is `A` + length.
        let mut raw = Vec::new();
        let depth = 100;
        raw.extend_from_slice(&((depth * 5 + 2) as u32).to_be_bytes());
        raw.extend_from_slice(b"\x01a");
        for level in 0..depth {
            raw.push(b'A');
            raw.extend_from_slice(&(((depth - level - 1) * 5) as u32).to_be_bytes());
        }
        let err = FieldTable::decode(&Bytes::from(raw)).unwrap_err();
        assert_eq!(err, DecodeError::TableTooDeep);
    }

    #[test]
    fn a_length_longer_than_the_input_is_malformed() {
        let raw = Bytes::from_static(b"\xff\xff\xff\xff\x01a");
        assert!(matches!(
            FieldTable::decode(&raw),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn names_and_strings_are_slices_of_the_input() {
        let t: FieldTable = [("name", "value")].into_iter().collect();
        let raw = encode(&t);
        let back = FieldTable::decode(&raw).unwrap();
        let (k, v) = back.iter().next().unwrap();
        let range = raw.as_ptr_range();
        assert!(range.contains(&k.as_bytes().as_ptr()));
        let FieldValue::LongStr(s) = v else {
            panic!("not a long string")
        };
        assert!(range.contains(&s.as_bytes().as_ptr()));
    }

    #[test]
    fn insert_replaces_an_entry_of_the_same_name() {
        let mut t = FieldTable::new();
        t.insert("a", 1i32);
        t.insert("a", 2i32);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("a"), Some(&FieldValue::I32(2)));
        assert_eq!(t.remove("a"), Some(FieldValue::I32(2)));
        assert!(t.is_empty());
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in entries {
            t.insert_short(ShortStr::try_from(*k).unwrap(), v.clone());
        }
        t
    }

    #[test]
    fn tables_are_equal_as_maps_whatever_the_order() {
        let inner = table(&[("y", FieldValue::I32(2)), ("x", FieldValue::Bool(true))]);
        let inner_sorted = table(&[("x", FieldValue::Bool(true)), ("y", FieldValue::I32(2))]);
        let a = table(&[
            ("b", FieldValue::I32(1)),
            ("a", FieldValue::Table(inner)),
            ("c", FieldValue::from("s")),
        ]);
        // What RabbitMQ 4 hands back: names sorted, at every level.
        let sorted = table(&[
            ("a", FieldValue::Table(inner_sorted)),
            ("b", FieldValue::I32(1)),
            ("c", FieldValue::from("s")),
        ]);
        assert_eq!(a, sorted);
        assert_eq!(sorted, a);
        // And so after the wire, which keeps each side's order.
        let back = FieldTable::decode(&encode(&sorted)).unwrap();
        assert_eq!(
            back.iter().next().map(|(k, _)| k.to_str().unwrap()),
            Some("a")
        );
        assert_eq!(back, a);
    }

    #[test]
    fn tables_differ_in_a_value_a_name_or_an_entry() {
        let a = table(&[("a", FieldValue::I32(1)), ("b", FieldValue::I32(2))]);
        assert_ne!(
            a,
            table(&[("b", FieldValue::I32(2)), ("a", FieldValue::I32(3))])
        );
        assert_ne!(
            a,
            table(&[("b", FieldValue::I32(2)), ("c", FieldValue::I32(1))])
        );
        assert_ne!(a, table(&[("b", FieldValue::I32(2))]));
        assert_ne!(
            a,
            table(&[("a", FieldValue::I64(1)), ("b", FieldValue::I32(2))])
        );
    }

    #[test]
    fn arrays_inside_tables_still_compare_in_order() {
        let list = |v: [i32; 2]| FieldValue::Array(v.into_iter().collect());
        let a = table(&[("list", list([1, 2])), ("n", FieldValue::Void)]);
        assert_eq!(a, table(&[("n", FieldValue::Void), ("list", list([1, 2]))]));
        assert_ne!(a, table(&[("n", FieldValue::Void), ("list", list([2, 1]))]));
    }

    #[test]
    fn repeated_names_from_a_peer_compare_their_values_in_order() {
        // insert() never repeats a name; a decoded table may. Built as the wire would carry it.
        let wire = |values: [i32; 2], other_first: bool| {
            let mut body = BytesMut::new();
            let mut entry = |name: &'static str, v: i32| {
                put_short_str(&mut body, &ShortStr::from_static(name));
                FieldValue::I32(v).encode(&mut body);
            };
            if other_first {
                entry("z", 0);
            }
            entry("d", values[0]);
            entry("d", values[1]);
            if !other_first {
                entry("z", 0);
            }
            let mut raw = BytesMut::new();
            raw.put_u32(body.len() as u32);
            raw.extend_from_slice(&body);
            FieldTable::decode(&raw.freeze()).unwrap()
        };
        assert_eq!(wire([1, 2], false), wire([1, 2], true));
        assert_ne!(wire([1, 2], false), wire([2, 1], true));
    }
}
