//! The properties the fuzz targets check, one plain function per target.
//!
//! This file is the single definition of those properties. The targets in `fuzz_targets/` call
//! it through this crate, and `amqp-wire/tests/fuzz_corpus.rs` includes the same file with
//! `#[path = "../../fuzz/src/lib.rs"] mod checks;` to replay the committed corpus and every
//! regression as an ordinary `cargo test`. It therefore uses only `amqp-wire`, `bytes` and
//! `std`, and has no crate-level attributes.
//!
//! Every function takes arbitrary bytes and panics (which libFuzzer reports as a crash) when its
//! property does not hold. Otherwise it returns whether the input decoded to anything, so that
//! the replay can tell a corpus that exercises the codec from one the codec only rejects.
//! Decoding errors are expected outcomes, not failures.
//!
//! The input itself is not expected back: the codec accepts some inputs it never writes (the
//! tag `L` decodes to the same value as `l`, reserved arguments and empty property-flag
//! continuation words are skipped, a `t` octet of 2 is `true`). So each round trip starts from
//! the decoded value `v` and checks that
//! - `encode(v)` is exactly `encoded_len()` octets long;
//! - `encode(decode(encode(v))) == encode(v)`: the octets survive, NaN payloads included;
//! - `decode(encode(v))` equals `v`, where a float NaN counts as equal to a NaN (`==` alone
//!   would fail on it): see [`same_value`]. This catches an encoder that writes a value where
//!   the decoder reads another field, such as a flag bit under the wrong mask, which the
//!   octet comparison alone cannot see.

use std::fmt::Debug;

use amqp_wire::{ContentHeader, DecodeError, FieldTable, Frame, FrameDecoder, Method};
use bytes::{Bytes, BytesMut};

/// The `frame_max` the `frame_decoder` target decodes with: RabbitMQ's default.
pub const FRAME_MAX: u32 = 131_072;

/// Asserts that `again`, decoded from the encoding of `value`, is the same value.
///
/// `==` first; only when it fails (a NaN is never `==`, or a bug) are the `Debug` forms
/// compared, in which every NaN reads `NaN`. Strings whose `Debug` form is lossy are compared
/// by the callers' octet comparison.
pub fn same_value<T: PartialEq + Debug>(value: &T, again: &T) {
    if value != again {
        assert_eq!(
            format!("{again:?}"),
            format!("{value:?}"),
            "decoding the encoding gave another value"
        );
    }
}

/// How a stream ended: `None` when the decoder asked for more bytes, or the error it stopped at.
type Outcome = Option<DecodeError>;

/// Target `frame_decoder`: a byte stream through [`FrameDecoder`], whole and in two chunks.
///
/// The first input octet chooses the split point (modulo the stream's length plus one); the
/// rest of the input is the stream. Checks that
/// - splitting the stream anywhere changes nothing: the same frames, the same outcome (an
///   error, or a request for more bytes with the same unconsumed tail);
/// - the decoder never consumes more than it was given;
/// - every decoded frame round-trips: see [`check_frame_round_trip`].
pub fn check_frame_stream(data: &[u8]) -> bool {
    let Some((&split, stream)) = data.split_first() else {
        return false;
    };
    let split = usize::from(split) % (stream.len() + 1);

    let mut decoder = FrameDecoder::new(FRAME_MAX);
    let mut whole = BytesMut::from(stream);
    let mut frames = Vec::new();
    let outcome = decode_until_stop(&mut decoder, &mut whole, &mut frames);

    let mut chunked = BytesMut::from(&stream[..split]);
    let mut chunked_frames = Vec::new();
    let mut chunked_outcome = decode_until_stop(&mut decoder, &mut chunked, &mut chunked_frames);
    if chunked_outcome.is_none() {
        chunked.extend_from_slice(&stream[split..]);
        chunked_outcome = decode_until_stop(&mut decoder, &mut chunked, &mut chunked_frames);
    }

    assert_eq!(
        chunked_outcome, outcome,
        "split at {split} changed the outcome"
    );
    assert_eq!(
        encode_all(&chunked_frames),
        encode_all(&frames),
        "split at {split} changed the frames"
    );
    if outcome.is_none() {
        assert_eq!(
            chunked, whole,
            "split at {split} changed the unconsumed tail"
        );
    }
    for frame in &frames {
        check_frame_round_trip(frame);
    }
    !frames.is_empty()
}

/// Decodes frames from `src` into `frames` until the decoder needs more bytes or fails.
fn decode_until_stop(
    decoder: &mut FrameDecoder,
    src: &mut BytesMut,
    frames: &mut Vec<Frame>,
) -> Outcome {
    loop {
        let before = src.len();
        let result = decoder.decode(src);
        assert!(src.len() <= before, "the decoder grew its input");
        match result {
            Ok(Some(frame)) => {
                assert!(src.len() < before, "a frame was decoded from no octets");
                frames.push(frame);
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

/// The encodings of `frames`, one `Bytes` per frame.
fn encode_all(frames: &[Frame]) -> Vec<Bytes> {
    frames.iter().map(encode_frame).collect()
}

/// Encodes one frame, checking that it writes exactly `encoded_len()` octets.
fn encode_frame(frame: &Frame) -> Bytes {
    let mut dst = BytesMut::new();
    frame
        .encode(&mut dst)
        .expect("a decoded frame fits a 32-bit size");
    assert_eq!(dst.len(), frame.encoded_len(), "encoded_len of {frame:?}");
    dst.freeze()
}

/// A decoded frame re-encodes to one frame that decodes (with no size limit), with nothing
/// left over, to the same frame with the same encoding.
pub fn check_frame_round_trip(frame: &Frame) {
    let first = encode_frame(frame);
    let mut src = BytesMut::from(&first[..]);
    let again = FrameDecoder::new(0)
        .decode(&mut src)
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}"))
        .unwrap_or_else(|| panic!("re-encoded {frame:?} is incomplete"));
    assert!(src.is_empty(), "re-encoded {frame:?} left {src:?} over");
    assert_eq!(encode_frame(&again), first, "{frame:?} did not round-trip");
    same_value(frame, &again);
}

/// Target `method`: [`Method::decode`] on a method frame's payload, then the round trip.
///
/// A decoded method also keeps the class and method ids it was decoded from.
pub fn check_method(data: &[u8]) -> bool {
    let Ok(method) = Method::decode(&Bytes::copy_from_slice(data)) else {
        return false;
    };
    let first = encode_method(&method);
    assert_eq!(first[..4], data[..4], "{method:?} changed its ids");
    let again = Method::decode(&first)
        .unwrap_or_else(|e| panic!("re-encoded {method:?} does not decode: {e}"));
    assert_eq!(
        encode_method(&again),
        first,
        "{method:?} did not round-trip"
    );
    same_value(&method, &again);
    true
}

/// Encodes a method payload, checking that it writes exactly `encoded_len()` octets.
fn encode_method(method: &Method) -> Bytes {
    let mut dst = BytesMut::new();
    method.encode(&mut dst);
    assert_eq!(dst.len(), method.encoded_len(), "encoded_len of {method:?}");
    dst.freeze()
}

/// Target `field_table`: [`FieldTable::decode`] on a bare table (length prefix included),
/// then the round trip.
pub fn check_field_table(data: &[u8]) -> bool {
    let Ok(table) = FieldTable::decode(&Bytes::copy_from_slice(data)) else {
        return false;
    };
    let first = encode_table(&table);
    let again = FieldTable::decode(&first)
        .unwrap_or_else(|e| panic!("re-encoded {table:?} does not decode: {e}"));
    assert_eq!(encode_table(&again), first, "{table:?} did not round-trip");
    same_value(&table, &again);
    true
}

/// Encodes a table, checking that it writes exactly `encoded_len()` octets.
fn encode_table(table: &FieldTable) -> Bytes {
    let mut dst = BytesMut::new();
    table.encode(&mut dst);
    assert_eq!(dst.len(), table.encoded_len(), "encoded_len of {table:?}");
    dst.freeze()
}

/// Target `content_header`: [`ContentHeader::decode`] on a header frame's payload, then the
/// round trip.
pub fn check_content_header(data: &[u8]) -> bool {
    let Ok(header) = ContentHeader::decode(&Bytes::copy_from_slice(data)) else {
        return false;
    };
    let first = encode_header(&header);
    let again = ContentHeader::decode(&first)
        .unwrap_or_else(|e| panic!("re-encoded {header:?} does not decode: {e}"));
    assert_eq!(
        encode_header(&again),
        first,
        "{header:?} did not round-trip"
    );
    same_value(&header, &again);
    true
}

/// Encodes a content header, checking that it writes exactly `encoded_len()` octets.
fn encode_header(header: &ContentHeader) -> Bytes {
    let mut dst = BytesMut::new();
    header.encode(&mut dst);
    assert_eq!(dst.len(), header.encoded_len(), "encoded_len of {header:?}");
    dst.freeze()
}

/// Target `engine`: arbitrary octets from a broker, after a valid handshake, into the client
/// engine ([`amqp_wire::connection::Connection`]), with a channel open in confirm mode, a
/// consumer registered and two mandatory publishes waiting for their confirms.
///
/// The first input octet chooses how the rest is cut into reads (its value is the chunk
/// length, 0 meaning all at once). After each read the engine's output, events and timers are
/// drained, and time moves on by a second. Checks that
/// - nothing panics, whatever the octets;
/// - every octet the engine writes decodes as frames: it never writes garbage back;
/// - once closed, it stays closed and writes nothing more.
///
/// Returns whether the engine was still open at the end (the input was accepted).
pub fn check_engine(data: &[u8]) -> bool {
    use amqp_wire::connection::Connection;
    let Some((&chunk, input)) = data.split_first() else {
        return false;
    };
    let mut now = std::time::Duration::from_secs(1);
    let mut engine = Connection::client(Default::default(), now);
    engine_setup(&mut engine, now);
    let chunk = if chunk == 0 {
        input.len().max(1)
    } else {
        usize::from(chunk)
    };
    let mut closed = false;
    for piece in input.chunks(chunk) {
        let mut read = BytesMut::from(piece);
        engine.handle_input(now, &mut read);
        let wrote = drain_engine(&mut engine, now);
        assert!(
            !(closed && wrote > 0),
            "a closed engine wrote {wrote} octets"
        );
        closed = closed || engine.is_closed();
        now += std::time::Duration::from_secs(1);
        engine.handle_timeout(now);
        drain_engine(&mut engine, now);
    }
    !engine.is_closed()
}

/// The broker's side of a handshake with RabbitMQ's tune, a channel opened, confirm mode and a
/// consumer tagged `c`, fed to `engine`; two mandatory publishes made.
fn engine_setup(engine: &mut amqp_wire::connection::Connection, now: std::time::Duration) {
    use amqp_wire::methods::*;
    use amqp_wire::{BasicProperties, ChannelId, ShortStr};
    let feed = |engine: &mut amqp_wire::connection::Connection, method: Method, channel: u16| {
        let mut read =
            BytesMut::from(&encode_frame(&Frame::Method(ChannelId(channel), method))[..]);
        engine.handle_input(now, &mut read);
        drain_engine(engine, now);
    };
    let start = ConnectionStart {
        mechanisms: "PLAIN".into(),
        locales: "en_US".into(),
        ..Default::default()
    };
    feed(engine, start.into(), 0);
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 60,
    };
    feed(engine, tune.into(), 0);
    feed(engine, ConnectionOpenOk.into(), 0);
    let Ok(id) = engine.open_channel() else {
        panic!("a connected engine opens a channel");
    };
    feed(engine, ChannelOpenOk.into(), id.0);
    engine
        .channel(id)
        .expect("open channel")
        .call(ConfirmSelect::default())
        .expect("confirm.select");
    feed(engine, ConfirmSelectOk.into(), id.0);
    let consume = BasicConsume {
        consumer_tag: ShortStr::from_static("c"),
        ..Default::default()
    };
    engine
        .channel(id)
        .expect("open channel")
        .call(consume)
        .expect("basic.consume");
    let ok = BasicConsumeOk {
        consumer_tag: ShortStr::from_static("c"),
    };
    feed(engine, ok.into(), id.0);
    for _ in 0..2 {
        let publish = BasicPublish {
            routing_key: ShortStr::from_static("q"),
            mandatory: true,
            ..Default::default()
        };
        let body = Bytes::from_static(b"hello");
        let _ = engine.channel(id).expect("open channel").basic_publish(
            publish,
            &BasicProperties::default(),
            body,
        );
    }
    drain_engine(engine, now);
}

/// Takes everything the engine wants to write and every event; checks that the octets decode
/// as frames. Returns how many octets it wrote.
fn drain_engine(engine: &mut amqp_wire::connection::Connection, now: std::time::Duration) -> usize {
    use bytes::Buf;
    let mut out = amqp_wire::Transmit::new();
    let _ = engine.poll_transmit(now, &mut out);
    let mut written = BytesMut::new();
    while out.has_remaining() {
        let n = out.chunk().len();
        written.extend_from_slice(out.chunk());
        out.advance(n);
    }
    let wrote = written.len();
    if written.starts_with(b"AMQP") {
        let _ = written.split_to(8);
    }
    let mut decoder = FrameDecoder::new(0);
    while !written.is_empty() {
        match decoder.decode(&mut written) {
            Ok(Some(_)) => {}
            other => panic!("the engine wrote octets that do not decode: {other:?}"),
        }
    }
    while engine.poll_event().is_some() {}
    let _ = engine.poll_timeout();
    wrote
}
