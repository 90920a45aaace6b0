//! The primitive wire types: nom parsers for reading, `BufMut` writers for writing.
//!
//! Everything here is private to the crate: nom never appears in a public signature. Parsers are
//! `complete` parsers over a payload whose length is already known, so running out of input is a
//! syntax error, never "need more".

use bytes::{BufMut, Bytes, BytesMut};
use nom::error::{ContextError, ErrorKind, ParseError};

use crate::error::DecodeError;
use crate::types::{LongStr, ShortStr};

/// The error type of every parser: a [`DecodeError`] in a wrapper that nom's traits are
/// implemented on, so that nom stays out of the public API.
#[derive(Debug, PartialEq)]
pub(crate) struct Fail(pub(crate) DecodeError);

/// What every parser returns.
pub(crate) type PResult<'a, T> = nom::IResult<&'a [u8], T, Fail>;

/// The context a failure gets when no parser named one.
const UNNAMED: &str = "field";

impl ParseError<&[u8]> for Fail {
    fn from_error_kind(_input: &[u8], _kind: ErrorKind) -> Self {
        Self(DecodeError::Malformed(UNNAMED))
    }

    fn append(_input: &[u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl ContextError<&[u8]> for Fail {
    /// Names the innermost unnamed failure; a more specific error is kept as it is.
    fn add_context(_input: &[u8], ctx: &'static str, other: Self) -> Self {
        match other.0 {
            DecodeError::Malformed(UNNAMED) => Self(DecodeError::Malformed(ctx)),
            _ => other,
        }
    }
}

/// Names an unnamed failure of `result` after `ctx`, as nom's `context` combinator does.
///
/// The name is made on the error path only: `context` wraps the parser in a closure and a
/// `map_err` that move the parsed value (368 octets for basic properties) once more on the
/// way out, which costs on every frame.
#[inline(always)]
pub(crate) fn named<'a, T>(result: PResult<'a, T>, ctx: &'static str) -> PResult<'a, T> {
    match result {
        Ok(ok) => Ok(ok),
        Err(e) => Err(name_failure(e, ctx)),
    }
}

#[cold]
#[inline(never)]
fn name_failure(e: nom::Err<Fail>, ctx: &'static str) -> nom::Err<Fail> {
    e.map(|f| Fail::add_context(&[], ctx, f))
}

/// Fails the parse with `err` (a `Failure`, so no alternative is tried).
#[cold]
pub(crate) fn fail<T>(err: DecodeError) -> Result<T, nom::Err<Fail>> {
    Err(nom::Err::Failure(Fail(err)))
}

/// Turns a parser's result into the public error, requiring that the whole input was used.
#[inline]
pub(crate) fn finish<T>(result: PResult<'_, T>) -> Result<T, DecodeError> {
    match result {
        Ok(([], value)) => Ok(value),
        Ok((rest, _)) => Err(DecodeError::TrailingBytes(rest.len())),
        Err(nom::Err::Error(Fail(e)) | nom::Err::Failure(Fail(e))) => Err(e),
        // Complete parsers never ask for more input; if one did, the payload was short.
        Err(nom::Err::Incomplete(_)) => Err(DecodeError::Malformed(UNNAMED)),
    }
}

/// An `octet`.
#[inline]
pub(crate) fn octet(i: &[u8]) -> PResult<'_, u8> {
    array(i).map(|(i, [b])| (i, b))
}

/// A `short` (u16).
#[inline]
pub(crate) fn short(i: &[u8]) -> PResult<'_, u16> {
    array(i).map(|(i, b)| (i, u16::from_be_bytes(b)))
}

/// A `long` (u32).
#[inline]
pub(crate) fn long(i: &[u8]) -> PResult<'_, u32> {
    array(i).map(|(i, b)| (i, u32::from_be_bytes(b)))
}

/// A `longlong` (u64), also used for `timestamp`.
#[inline]
pub(crate) fn longlong(i: &[u8]) -> PResult<'_, u64> {
    array(i).map(|(i, b)| (i, u64::from_be_bytes(b)))
}

/// The first `N` octets. nom's `be_u16` and friends do the same through its generic `Input`
/// trait, which does not always inline; these four run several times per frame.
#[inline(always)]
fn array<const N: usize>(i: &[u8]) -> PResult<'_, [u8; N]> {
    match i.split_first_chunk::<N>() {
        Some((head, rest)) => Ok((rest, *head)),
        None => Err(too_short()),
    }
}

/// The input ended before the value did.
#[cold]
fn too_short() -> nom::Err<Fail> {
    nom::Err::Error(Fail(DecodeError::Malformed(UNNAMED)))
}

/// `n` octets, borrowed.
#[inline]
pub(crate) fn take(i: &[u8], n: usize) -> PResult<'_, &[u8]> {
    if i.len() < n {
        return Err(too_short());
    }
    let (taken, rest) = i.split_at(n);
    Ok((rest, taken))
}

/// A `shortstr`, as a slice of `src` (no copy). `i` must be a sub-slice of `src`.
#[inline]
pub(crate) fn short_str<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, ShortStr> {
    let (i, len) = octet(i)?;
    let (i, s) = take(i, usize::from(len))?;
    Ok((i, ShortStr::from_wire(src.slice_ref(s))))
}

/// A `longstr`, as a slice of `src` (no copy). `i` must be a sub-slice of `src`.
#[inline]
pub(crate) fn long_str<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, LongStr> {
    let (i, bytes) = long_bytes(src, i)?;
    Ok((i, LongStr(bytes)))
}

/// The octets of a `longstr` (also the `x` field value), as a slice of `src`.
#[inline]
pub(crate) fn long_bytes<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Bytes> {
    let (i, len) = long(i)?;
    // `take` checks the length against what is there, so no allocation follows `len`.
    let (i, s) = take(i, len as usize)?;
    Ok((i, src.slice_ref(s)))
}

/// One bit of a packed octet: bit 0 is the first argument of a run.
#[inline]
pub(crate) fn bit(octet: u8, mask: u8) -> bool {
    octet & mask != 0
}

/// Packs bits into an octet: `flag(true, 0x02)` is `0x02`.
#[inline]
pub(crate) fn flag(set: bool, mask: u8) -> u8 {
    if set { mask } else { 0 }
}

/// Writes a `shortstr`.
#[inline]
pub(crate) fn put_short_str(dst: &mut BytesMut, s: &ShortStr) {
    // `ShortStr` guarantees at most 255 octets, so the cast cannot truncate.
    dst.put_u8(s.len() as u8);
    dst.put_slice(s.as_bytes());
}

/// Writes a `longstr` (or the octets of an `x` value).
///
/// Lengths above `u32::MAX` cannot occur: a frame is bounded by a `u32` size, and
/// [`crate::Frame::encode`] refuses larger payloads before anything is written.
#[inline]
pub(crate) fn put_long_bytes(dst: &mut BytesMut, s: &[u8]) {
    dst.put_u32(s.len() as u32);
    dst.put_slice(s);
}

/// The encoded size of a `shortstr`.
#[inline]
pub(crate) fn short_str_len(s: &ShortStr) -> usize {
    1 + s.len()
}

/// The encoded size of a `longstr`.
#[inline]
pub(crate) fn long_str_len(s: &[u8]) -> usize {
    4 + s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_str_is_a_slice_of_the_source() {
        let src = Bytes::from_static(b"\x03abcrest");
        let (rest, s) = short_str(&src, &src).unwrap();
        assert_eq!(rest, b"rest");
        assert_eq!(s, "abc");
        assert_eq!(
            s.as_bytes().as_ptr(),
            src[1..].as_ptr(),
            "copied instead of sliced"
        );
    }

    #[test]
    fn short_str_past_the_end_is_malformed() {
        let src = Bytes::from_static(b"\x05ab");
        assert_eq!(
            finish(short_str(&src, &src)),
            Err(DecodeError::Malformed("field"))
        );
    }

    #[test]
    fn huge_long_str_length_does_not_allocate_or_panic() {
        let src = Bytes::from_static(b"\xff\xff\xff\xffab");
        assert!(finish(long_str(&src, &src)).is_err());
    }

    #[test]
    fn trailing_bytes_are_reported() {
        assert_eq!(
            finish(octet(&[1, 2, 3])),
            Err(DecodeError::TrailingBytes(2))
        );
    }

    #[test]
    fn context_names_the_failure() {
        let r = nom::Parser::parse(&mut nom::error::context("queue", short), &[1]);
        assert_eq!(finish(r), Err(DecodeError::Malformed("queue")));
        assert_eq!(
            finish(named(short(&[1]), "queue")),
            Err(DecodeError::Malformed("queue"))
        );
        // A named failure keeps its name, as with `context`.
        let inner = named(short(&[1]), "inner");
        assert_eq!(
            finish(named(inner, "outer")),
            Err(DecodeError::Malformed("inner"))
        );
    }
}
