//! Typed field-table values: the `key:type=value` syntax of `--header` and `--arg`, and their
//! JSON and text renderings.
//!
//! | type        | aliases         | tag | value                                             |
//! |-------------|-----------------|-----|---------------------------------------------------|
//! | `string`    | `str`           | `S` | any text (the default when no type is given)      |
//! | `bool`      |                 | `t` | `true`/`false`, `yes`/`no`, `1`/`0`               |
//! | `i8` `u8`   |                 | `b` `B` | integers in range                             |
//! | `i16` `u16` | `short` (i16)   | `s` `u` |                                               |
//! | `i32` `u32` | `int` (i32)     | `I` `i` |                                               |
//! | `i64`       | `long`          | `l` |                                                   |
//! | `f32` `f64` | `float` `double`| `f` `d` | decimal notation, `NaN`, `inf`                |
//! | `decimal`   |                 | `D` | `123.45`: scale 2, value 12345 (unsigned)         |
//! | `bytes`     |                 | `x` | base64, or `hex:0a0b`, or `base64:AAE=`           |
//! | `timestamp` |                 | `T` | POSIX seconds, or `now`                           |
//! | `void`      |                 | `V` | nothing: `key:void` or `key:void=`                |
//! | `table`     |                 | `F` | a JSON object (see [`from_json`])                 |
//! | `array`     |                 | `A` | a JSON array                                      |
//!
//! A key that itself contains `:` needs an explicit type: `a:b:string=v` is key `a:b`.
//!
//! The JSON form of a value is `{"type": NAME, "value": ...}` with NAME from the first column;
//! values that are octets rather than text (a `bytes` value, or a `string` that is not UTF-8)
//! are base64 and carry `"encoding": "base64"`. [`from_json`] reads that form back, so what
//! `amqp consume --json` prints can be published again.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use amqp_client::{Decimal, FieldArray, FieldTable, FieldValue, LongStr, ShortStr};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// How deep a JSON table or array value may nest (RabbitMQ's own limit is far below
/// anything a person types; this only stops a runaway input).
const MAX_JSON_DEPTH: usize = 32;

/// Why a `key:type=value` could not be turned into a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No `=` and not a `void`.
    #[error("expected key[:type]=value, found no '='")]
    NoEquals,
    /// An empty key.
    #[error("the key is empty")]
    EmptyKey,
    /// A key longer than a short string can hold.
    #[error("the key is {0} octets long; at most 255 fit")]
    KeyTooLong(usize),
    /// A type name not in the table above.
    #[error(
        "unknown type {0:?}; use one of string, bool, i8, u8, i16, u16, i32, u32, i64, f32, \
         f64, decimal, bytes, timestamp, void, table, array"
    )]
    UnknownType(String),
    /// A value that does not parse as its type.
    #[error("{value:?} is not a valid {ty}: {reason}")]
    BadValue {
        /// The type asked for.
        ty: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One parsed `key:type=value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The key.
    pub key: ShortStr,
    /// The typed value.
    pub value: FieldValue,
}

/// A value type, as named on the command line and in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Bool,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    F32,
    F64,
    Decimal,
    String,
    Bytes,
    Timestamp,
    Void,
    Table,
    Array,
}

impl Type {
    fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "bool" | "boolean" => Self::Bool,
            "i8" => Self::I8,
            "u8" => Self::U8,
            "i16" | "short" => Self::I16,
            "u16" => Self::U16,
            "i32" | "int" => Self::I32,
            "u32" => Self::U32,
            "i64" | "long" => Self::I64,
            "f32" | "float" => Self::F32,
            "f64" | "double" => Self::F64,
            "decimal" => Self::Decimal,
            "string" | "str" => Self::String,
            "bytes" => Self::Bytes,
            "timestamp" => Self::Timestamp,
            "void" => Self::Void,
            "table" => Self::Table,
            "array" => Self::Array,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::I8 => "i8",
            Self::U8 => "u8",
            Self::I16 => "i16",
            Self::U16 => "u16",
            Self::I32 => "i32",
            Self::U32 => "u32",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::Decimal => "decimal",
            Self::String => "string",
            Self::Bytes => "bytes",
            Self::Timestamp => "timestamp",
            Self::Void => "void",
            Self::Table => "table",
            Self::Array => "array",
        }
    }
}

/// Parses one `key[:type]=value` (or `key:void`), as `--header` and `--arg` take them.
///
/// ```
/// use amqp_cli::headers::parse_header;
/// use amqp_client::FieldValue;
/// assert_eq!(parse_header("retries:int=5").unwrap().value, FieldValue::I32(5));
/// assert_eq!(parse_header("note=hello").unwrap().value, FieldValue::from("hello"));
/// ```
///
/// # Errors
/// [`HeaderError`] for a missing `=`, an empty or too long key, an unknown type, or a value
/// that is not valid for its type.
pub fn parse_header(spec: &str) -> Result<Header, HeaderError> {
    let (left, value) = match spec.split_once('=') {
        Some((left, value)) => (left, Some(value)),
        None => (spec, None),
    };
    let (key, ty) = match left.rsplit_once(':') {
        Some((key, ty)) => (
            key,
            Type::parse(ty).ok_or_else(|| HeaderError::UnknownType(ty.to_owned()))?,
        ),
        None => (left, Type::String),
    };
    if key.is_empty() {
        return Err(HeaderError::EmptyKey);
    }
    let key = ShortStr::try_from(key).map_err(|e| HeaderError::KeyTooLong(e.0))?;
    let value = match (value, ty) {
        (None, Type::Void) => FieldValue::Void,
        (None, _) => return Err(HeaderError::NoEquals),
        (Some(v), ty) => parse_value(ty, v)?,
    };
    Ok(Header { key, value })
}

/// Collects parsed headers into a table; `None` when there are none.
pub fn table(headers: &[Header]) -> Option<FieldTable> {
    if headers.is_empty() {
        return None;
    }
    let mut table = FieldTable::new();
    for h in headers {
        table.insert_short(h.key.clone(), h.value.clone());
    }
    Some(table)
}

fn bad(ty: Type, value: &str, reason: impl ToString) -> HeaderError {
    HeaderError::BadValue {
        ty: ty.name(),
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// Parses a text value as the given type.
fn parse_value(ty: Type, v: &str) -> Result<FieldValue, HeaderError> {
    let int = |e: std::num::ParseIntError| bad(ty, v, e);
    Ok(match ty {
        Type::String => FieldValue::from(v),
        Type::Bool => FieldValue::Bool(
            parse_bool(v).ok_or_else(|| bad(ty, v, "expected true, false, yes, no, 1 or 0"))?,
        ),
        Type::I8 => FieldValue::I8(v.parse().map_err(int)?),
        Type::U8 => FieldValue::U8(v.parse().map_err(int)?),
        Type::I16 => FieldValue::I16(v.parse().map_err(int)?),
        Type::U16 => FieldValue::U16(v.parse().map_err(int)?),
        Type::I32 => FieldValue::I32(v.parse().map_err(int)?),
        Type::U32 => FieldValue::U32(v.parse().map_err(int)?),
        Type::I64 => FieldValue::I64(v.parse().map_err(int)?),
        Type::F32 => FieldValue::F32(v.parse().map_err(|e| bad(ty, v, e))?),
        Type::F64 => FieldValue::F64(v.parse().map_err(|e| bad(ty, v, e))?),
        Type::Decimal => FieldValue::Decimal(parse_decimal(v).map_err(|r| bad(ty, v, r))?),
        Type::Bytes => FieldValue::Bytes(parse_bytes(v).map_err(|r| bad(ty, v, r))?),
        Type::Timestamp => FieldValue::Timestamp(parse_timestamp(v).map_err(int)?),
        Type::Void if v.is_empty() => FieldValue::Void,
        Type::Void => return Err(bad(ty, v, "void takes no value")),
        Type::Table | Type::Array => {
            let json: Value = serde_json::from_str(v).map_err(|e| bad(ty, v, e))?;
            match (ty, from_json(&json).map_err(|r| bad(ty, v, r))?) {
                (Type::Table, t @ FieldValue::Table(_))
                | (Type::Array, t @ FieldValue::Array(_)) => t,
                _ => return Err(bad(ty, v, format!("expected a JSON {}", json_kind(ty)))),
            }
        }
    })
}

fn json_kind(ty: Type) -> &'static str {
    if ty == Type::Table { "object" } else { "array" }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// `123.45` → scale 2, value 12345.
fn parse_decimal(v: &str) -> Result<Decimal, &'static str> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !all_digits(int) || !all_digits(frac) {
        return Err(
            "expected digits with an optional '.', such as 123.45 (no sign: RabbitMQ reads decimals unsigned)",
        );
    }
    let scale = u8::try_from(frac.len()).map_err(|_| "more than 255 digits after the point")?;
    let value = format!("{int}{frac}")
        .parse::<u32>()
        .map_err(|_| "the digits without the point must fit 32 bits")?;
    Ok(Decimal { scale, value })
}

fn parse_bytes(v: &str) -> Result<Bytes, String> {
    if let Some(hex) = v.strip_prefix("hex:") {
        return parse_hex(hex).map(Bytes::from);
    }
    let b64 = v.strip_prefix("base64:").unwrap_or(v);
    BASE64
        .decode(b64)
        .map(Bytes::from)
        .map_err(|e| format!("not base64 ({e}); write hex as hex:0a0b"))
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b" _".contains(b)).collect();
    if digits.len() % 2 != 0 {
        return Err("hex needs an even number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| "not hex".to_owned())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not a hex octet"))
        })
        .collect()
}

/// POSIX seconds, or `now`.
///
/// # Errors
/// When `v` is neither `now` nor a non-negative integer.
pub fn parse_timestamp(v: &str) -> Result<u64, std::num::ParseIntError> {
    if v.eq_ignore_ascii_case("now") {
        return Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()));
    }
    v.parse()
}

/// The type name of a value, as `--header` takes it and `--json` prints it.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "i8",
        FieldValue::U8(_) => "u8",
        FieldValue::I16(_) => "i16",
        FieldValue::U16(_) => "u16",
        FieldValue::I32(_) => "i32",
        FieldValue::U32(_) => "u32",
        FieldValue::I64(_) => "i64",
        FieldValue::F32(_) => "f32",
        FieldValue::F64(_) => "f64",
        FieldValue::Decimal(_) => "decimal",
        FieldValue::LongStr(_) => "string",
        FieldValue::Bytes(_) => "bytes",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Array(_) => "array",
        FieldValue::Void => "void",
        _ => "unknown",
    }
}

/// A decimal as text: scale 2, value 12345 → `123.45`.
pub fn decimal_text(d: Decimal) -> String {
    let digits = d.value.to_string();
    let scale = usize::from(d.scale);
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{int}.{frac}")
}

/// A float as JSON: a number when finite (the shortest text that reads back the same), else
/// the strings `NaN`, `inf`, `-inf`.
fn float_json(text: String, finite: bool) -> Value {
    if finite {
        if let Ok(n) = text.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(n) {
                return Value::Number(n);
            }
        }
    }
    Value::String(text)
}

/// Octets as JSON text: the string when UTF-8, else base64 with `"encoding": "base64"` added
/// to `obj`.
fn octets_json(bytes: &[u8], obj: &mut Map<String, Value>) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => {
            obj.insert("encoding".into(), "base64".into());
            Value::String(BASE64.encode(bytes))
        }
    }
}

/// A value as `{"type": NAME, "value": ...}`.
///
/// ```
/// use amqp_cli::headers::to_json;
/// use amqp_client::FieldValue;
/// assert_eq!(to_json(&FieldValue::I16(-2)).to_string(), r#"{"type":"i16","value":-2}"#);
/// ```
pub fn to_json(v: &FieldValue) -> Value {
    let mut obj = Map::new();
    obj.insert("type".into(), type_name(v).into());
    let value = match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::F32(f) => float_json(f.to_string(), f.is_finite()),
        FieldValue::F64(f) => float_json(f.to_string(), f.is_finite()),
        FieldValue::Decimal(d) => Value::String(decimal_text(*d)),
        FieldValue::LongStr(s) => octets_json(s.as_bytes(), &mut obj),
        FieldValue::Bytes(b) => {
            obj.insert("encoding".into(), "base64".into());
            Value::String(BASE64.encode(b))
        }
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Array(a) => Value::Array(a.0.iter().map(to_json).collect()),
        _ => Value::Null,
    };
    obj.insert("value".into(), value);
    Value::Object(obj)
}

/// A table as `{"key": {"type": ..., "value": ...}, ...}`, in the table's order.
pub fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(t.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect())
}

/// Reads a JSON value back into a field value.
///
/// An object of the form `{"type": NAME, "value": V}` (with `"encoding": "base64"` where
/// [`to_json`] puts it) is taken as typed; anything else is inferred: `true`/`false` → bool,
/// an integer → i64, another number → f64, a string → string, `null` → void, an array →
/// array, an object → table.
///
/// # Errors
/// A description of the first value that does not fit its type.
pub fn from_json(v: &Value) -> Result<FieldValue, String> {
    from_json_at(v, 0)
}

fn from_json_at(v: &Value, depth: usize) -> Result<FieldValue, String> {
    if depth > MAX_JSON_DEPTH {
        return Err(format!("nested deeper than {MAX_JSON_DEPTH}"));
    }
    if let Some(typed) = typed_json(v, depth)? {
        return Ok(typed);
    }
    Ok(match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => FieldValue::I64(i),
            (None, Some(f)) if !n.is_u64() => FieldValue::F64(f),
            _ => return Err(format!("{n} does not fit a signed 64-bit integer")),
        },
        Value::String(s) => FieldValue::from(s.as_str()),
        Value::Array(items) => FieldValue::Array(FieldArray(
            items
                .iter()
                .map(|i| from_json_at(i, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(map) => FieldValue::Table(object_table(map, depth)?),
    })
}

fn object_table(map: &Map<String, Value>, depth: usize) -> Result<FieldTable, String> {
    let mut table = FieldTable::new();
    for (k, v) in map {
        let key = ShortStr::try_from(k.as_str())
            .map_err(|e| format!("key of {} octets is longer than 255", e.0))?;
        table.insert_short(key, from_json_at(v, depth + 1)?);
    }
    Ok(table)
}

/// `{"type": NAME, "value": V}` → `Some(value)`; any other shape → `None`.
fn typed_json(v: &Value, depth: usize) -> Result<Option<FieldValue>, String> {
    let Value::Object(map) = v else {
        return Ok(None);
    };
    let extra = map
        .keys()
        .any(|k| !matches!(k.as_str(), "type" | "value" | "encoding"));
    let (Some(Value::String(name)), Some(value), false) =
        (map.get("type"), map.get("value"), extra)
    else {
        return Ok(None);
    };
    let Some(ty) = Type::parse(name) else {
        return Ok(None);
    };
    let base64 = map.get("encoding").and_then(Value::as_str) == Some("base64");
    typed_value(ty, value, base64, depth).map(Some)
}

fn typed_value(ty: Type, v: &Value, base64: bool, depth: usize) -> Result<FieldValue, String> {
    let wrong = || format!("{v} is not a valid {}", ty.name());
    match (ty, v) {
        (Type::Table, Value::Object(map)) => Ok(FieldValue::Table(object_table(map, depth)?)),
        (Type::Array, Value::Array(items)) => Ok(FieldValue::Array(FieldArray(
            items
                .iter()
                .map(|i| from_json_at(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ))),
        (Type::Void, Value::Null) => Ok(FieldValue::Void),
        (Type::String, Value::String(s)) if base64 => BASE64
            .decode(s)
            .map(|b| FieldValue::LongStr(LongStr::from(b)))
            .map_err(|e| format!("{s:?} is not base64: {e}")),
        (Type::Bytes, Value::String(s)) if !base64 && s.starts_with("hex:") => {
            parse_value(ty, s).map_err(|e| e.to_string())
        }
        (Type::Bytes, Value::String(s)) => BASE64
            .decode(s)
            .map(|b| FieldValue::Bytes(Bytes::from(b)))
            .map_err(|e| format!("{s:?} is not base64: {e}")),
        (_, Value::String(s)) => parse_value(ty, s).map_err(|e| e.to_string()),
        (_, Value::Bool(b)) if ty == Type::Bool => Ok(FieldValue::Bool(*b)),
        (_, Value::Number(n)) => parse_value(ty, &n.to_string()).map_err(|_| wrong()),
        _ => Err(wrong()),
    }
}

/// A value as text, in the `key:type=value` syntax's value part: strings quoted, bytes as
/// `hex:...` (the first 32 octets), tables as `{key:type=value, ...}`, arrays as `[...]`.
pub fn to_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::I8(n) => n.to_string(),
        FieldValue::U8(n) => n.to_string(),
        FieldValue::I16(n) => n.to_string(),
        FieldValue::U16(n) => n.to_string(),
        FieldValue::I32(n) => n.to_string(),
        FieldValue::U32(n) => n.to_string(),
        FieldValue::I64(n) => n.to_string(),
        FieldValue::F32(f) => f.to_string(),
        FieldValue::F64(f) => f.to_string(),
        FieldValue::Decimal(d) => decimal_text(*d),
        FieldValue::LongStr(s) => format!("{s:?}"),
        FieldValue::Bytes(b) => hex_text(b, 32),
        FieldValue::Timestamp(t) => t.to_string(),
        FieldValue::Table(t) => table_text(t),
        FieldValue::Array(a) => {
            let items: Vec<String> =
                a.0.iter()
                    .map(|v| format!("{}:{}", type_name(v), to_text(v)))
                    .collect();
            format!("[{}]", items.join(", "))
        }
        FieldValue::Void => String::new(),
        _ => "?".to_owned(),
    }
}

/// A table as `{key:type=value, ...}`.
pub fn table_text(t: &FieldTable) -> String {
    let entries: Vec<String> = t
        .iter()
        .map(|(k, v)| format!("{k}:{}={}", type_name(v), to_text(v)))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// `hex:0a0b...`, cut after `max` octets with the full length noted.
pub fn hex_text(b: &[u8], max: usize) -> String {
    let mut out = String::from("hex:");
    for octet in b.iter().take(max) {
        let _ = write!(out, "{octet:02x}");
    }
    if b.len() > max {
        let _ = write!(out, "...({} octets)", b.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(spec: &str) -> FieldValue {
        parse_header(spec).unwrap().value
    }

    #[test]
    fn every_type_parses() {
        let cases = [
            ("k=plain text", FieldValue::from("plain text")),
            ("k:string=a=b", FieldValue::from("a=b")),
            ("k:bool=true", FieldValue::Bool(true)),
            ("k:bool=No", FieldValue::Bool(false)),
            ("k:i8=-128", FieldValue::I8(-128)),
            ("k:u8=255", FieldValue::U8(255)),
            ("k:i16=-2", FieldValue::I16(-2)),
            ("k:short=7", FieldValue::I16(7)),
            ("k:u16=65535", FieldValue::U16(65535)),
            ("k:int=5", FieldValue::I32(5)),
            ("k:i32=-5", FieldValue::I32(-5)),
            ("k:u32=4294967295", FieldValue::U32(u32::MAX)),
            ("k:long=-9", FieldValue::I64(-9)),
            ("k:i64=9223372036854775807", FieldValue::I64(i64::MAX)),
            ("k:f32=1.5", FieldValue::F32(1.5)),
            ("k:f64=-0.25", FieldValue::F64(-0.25)),
            (
                "k:decimal=123.45",
                FieldValue::Decimal(Decimal {
                    scale: 2,
                    value: 12345,
                }),
            ),
            (
                "k:bytes=AAH/",
                FieldValue::Bytes(Bytes::from_static(&[0, 1, 255])),
            ),
            (
                "k:bytes=hex:00 01ff",
                FieldValue::Bytes(Bytes::from_static(&[0, 1, 255])),
            ),
            (
                "k:timestamp=1700000000",
                FieldValue::Timestamp(1_700_000_000),
            ),
            ("k:void", FieldValue::Void),
            ("k:void=", FieldValue::Void),
        ];
        for (spec, want) in cases {
            assert_eq!(value(spec), want, "{spec}");
        }
    }

    #[test]
    fn tables_and_arrays_take_json() {
        let t = value(r#"k:table={"a":1,"b":{"type":"u8","value":7},"c":[true,null]}"#);
        let FieldValue::Table(t) = t else {
            panic!("not a table")
        };
        assert_eq!(t.get("a"), Some(&FieldValue::I64(1)));
        assert_eq!(t.get("b"), Some(&FieldValue::U8(7)));
        assert_eq!(
            t.get("c"),
            Some(&FieldValue::Array(FieldArray(vec![
                FieldValue::Bool(true),
                FieldValue::Void
            ])))
        );
        assert_eq!(
            value(r#"k:array=[1.5,"x"]"#),
            FieldValue::Array(FieldArray(vec![
                FieldValue::F64(1.5),
                FieldValue::from("x")
            ]))
        );
        assert!(parse_header("k:table=[1]").is_err());
        assert!(parse_header("k:array={}").is_err());
    }

    #[test]
    fn keys_with_colons_need_a_type() {
        let h = parse_header("a:b:string=v").unwrap();
        assert_eq!(h.key, "a:b");
        assert_eq!(
            parse_header("a:b=v"),
            Err(HeaderError::UnknownType("b".into()))
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for spec in [
            "novalue",
            "=v",
            "k:i8=128",
            "k:u8=-1",
            "k:int=five",
            "k:bool=maybe",
            "k:decimal=-1.5",
            "k:decimal=1.2.3",
            "k:decimal=99999999999",
            "k:bytes=hex:abc",
            "k:bytes=!!",
            "k:void=x",
            "k:table={",
            "k:frob=1",
            "k:timestamp=-1",
        ] {
            assert!(parse_header(spec).is_err(), "{spec}");
        }
        let long = format!("{}=v", "k".repeat(256));
        assert_eq!(parse_header(&long), Err(HeaderError::KeyTooLong(256)));
    }

    #[test]
    fn decimals_print_with_their_scale() {
        let d = |scale, value| decimal_text(Decimal { scale, value });
        assert_eq!(d(2, 12345), "123.45");
        assert_eq!(d(0, 7), "7");
        assert_eq!(d(4, 5), "0.0005");
    }

    #[test]
    fn json_carries_the_type_and_reads_back() {
        let values = [
            FieldValue::Bool(false),
            FieldValue::I8(-1),
            FieldValue::U8(200),
            FieldValue::I16(-300),
            FieldValue::U16(60000),
            FieldValue::I32(-70000),
            FieldValue::U32(4_000_000_000),
            FieldValue::I64(i64::MIN),
            FieldValue::F32(0.1),
            FieldValue::F64(2.5e300),
            FieldValue::Decimal(Decimal {
                scale: 3,
                value: 1005,
            }),
            FieldValue::from("héllo"),
            FieldValue::LongStr(LongStr::from(vec![0xff, 0xfe])),
            FieldValue::Bytes(Bytes::from_static(b"\x00\x01")),
            FieldValue::Timestamp(1_700_000_000),
            FieldValue::Void,
            FieldValue::Table([("n", FieldValue::U16(1))].into_iter().collect()),
            FieldValue::Array(FieldArray(vec![FieldValue::I8(1), FieldValue::from("s")])),
        ];
        for v in values {
            let json = to_json(&v);
            assert_eq!(json["type"], type_name(&v));
            assert_eq!(from_json(&json).as_ref(), Ok(&v), "{json}");
        }
        assert_eq!(to_json(&FieldValue::F32(0.1))["value"], json!(0.1));
        assert_eq!(
            to_json(&FieldValue::Bytes(Bytes::from_static(b"\x00\x01"))),
            json!({"type": "bytes", "encoding": "base64", "value": "AAE="})
        );
        assert_eq!(
            to_json(&FieldValue::Decimal(Decimal {
                scale: 2,
                value: 12345
            }))["value"],
            "123.45"
        );
        assert_eq!(to_json(&FieldValue::F64(f64::NAN))["value"], "NaN");
    }

    #[test]
    fn text_rendering_uses_the_header_syntax() {
        let t: FieldTable = [
            ("a", FieldValue::I32(5)),
            ("b", FieldValue::from("x y")),
            ("c", FieldValue::Bytes(Bytes::from_static(&[1, 2]))),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            table_text(&t),
            r#"{a:i32=5, b:string="x y", c:bytes=hex:0102}"#
        );
        assert_eq!(hex_text(&[0xab; 3], 2), "hex:abab...(3 octets)");
    }
}
