//! Inputs shared by the benchmarks: byte streams as RabbitMQ sends them, publishes as an
//! application makes them, and the "floor" that every decoder is measured against.
//!
//! Everything here is built once, before measuring; nothing here is timed except
//! [`scan_frames`] and [`drain`], which stand for the work any driver must do.
#![forbid(unsafe_code)]

use std::io::IoSlice;
use std::time::Duration;

use amqp_wire::connection::{ClientConfig, Connection, Event};
use amqp_wire::methods::{
    BasicConsume, BasicConsumeOk, BasicDeliver, BasicPublish, ChannelOpenOk, ConnectionOpenOk,
    ConnectionStart, ConnectionTune,
};
use amqp_wire::{
    BasicProperties, ChannelId, ContentHeader, DeliveryTag, FieldArray, FieldTable, FieldValue,
    Frame, FrameDecoder, LongStr, Method, ShortStr, Transmit,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Messages per measured stream: criterion reports rates per message with
/// `Throughput::Elements(MESSAGES)`.
pub const MESSAGES: usize = 10_000;

/// The `frame_max` RabbitMQ offers by default (128 KiB): bodies longer than 131,064 octets
/// take more than one body frame.
pub const FRAME_MAX: u32 = 131_072;

/// The body sizes of the codec benches, and their labels.
pub const BODIES: [(usize, &str); 3] = [(16, "16B"), (4096, "4KiB"), (131_072, "128KiB")];

/// The channel every message of a stream travels on.
pub const CHANNEL: ChannelId = ChannelId(1);

/// A consumer tag as RabbitMQ makes them up: `amq.ctag-` and 22 characters of base64.
pub const CONSUMER_TAG: &str = "amq.ctag-Xq4bB2pD0QbS4Qk1bTzS0w";

/// A body of `len` octets (a repeating pattern, so it is not all zeroes).
pub fn body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// The five application headers of a "rich" message: a trace id, a retry count, the
/// publishing service, a flag and a creation time in milliseconds.
pub fn headers_5() -> FieldTable {
    let mut headers = FieldTable::new();
    headers.insert("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736");
    headers.insert("x-retry-count", 0i32);
    headers.insert("x-source", "orders-service");
    headers.insert("x-replay", false);
    headers.insert("x-created-ms", 1_700_000_000_123i64);
    headers
}

/// The properties RabbitMQ relays with each delivery: `delivery_mode` 2, and with
/// `rich` also [`headers_5`] and a message id.
pub fn delivery_properties(rich: bool) -> BasicProperties {
    BasicProperties {
        delivery_mode: Some(BasicProperties::PERSISTENT),
        headers: rich.then(headers_5),
        message_id: rich.then(|| ShortStr::from_static("0a3f6c1e-5b0d-4c8e-9f27-7d6b1e2c9a40")),
        ..Default::default()
    }
}

/// `basic.deliver` for the `tag`-th message of a consumer on `amq.direct`.
pub fn deliver_method(tag: u64) -> Method {
    Method::BasicDeliver(BasicDeliver {
        consumer_tag: ShortStr::from_static(CONSUMER_TAG),
        delivery_tag: DeliveryTag(tag),
        redelivered: false,
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("bench"),
    })
}

/// `count` deliveries as RabbitMQ sends them on [`CHANNEL`]: for each, `basic.deliver`
/// (delivery tags 1, 2, ...), the content header with [`delivery_properties`]`(rich)`, and a
/// `body_len`-octet body cut into frames of at most [`FRAME_MAX`].
///
/// # Panics
/// Never for the sizes the benches use (a frame that cannot be encoded is a bug here).
pub fn delivery_stream(count: usize, body_len: usize, rich: bool) -> Bytes {
    let body = body(body_len);
    let header = ContentHeader {
        body_size: body_len as u64,
        properties: delivery_properties(rich),
    };
    let per_message = body_len + 256 + body_len.div_ceil(FRAME_MAX as usize) * 8;
    let mut stream = Vec::with_capacity(count * per_message);
    let mut out = Transmit::new();
    for tag in 1..=count as u64 {
        out.push_content_frames(
            CHANNEL,
            &deliver_method(tag),
            &header,
            body.clone(),
            FRAME_MAX,
        )
        .expect("a delivery fits its frames");
        stream.put(&mut out);
    }
    Bytes::from(stream)
}

/// `basic.publish` to the default exchange, routing key `bench`.
pub fn publish_method() -> BasicPublish {
    BasicPublish {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("bench"),
        ..Default::default()
    }
}

/// The properties of a published message: persistent, nothing else.
pub fn publish_properties() -> BasicProperties {
    BasicProperties {
        delivery_mode: Some(BasicProperties::PERSISTENT),
        ..Default::default()
    }
}

/// Writes all of `out` the way a driver's `write_vectored` loop would, to a socket that takes
/// everything: up to 64 slices at a time, then [`Buf::advance`]. Returns the octets "written".
pub fn drain(out: &mut Transmit) -> usize {
    let mut written = 0;
    while out.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = out.chunks_vectored(&mut slices);
        let len: usize = slices[..n].iter().map(|s| s.len()).sum();
        written += len;
        out.advance(len);
    }
    written
}

/// Cuts a stream of whole frames into pieces of at most `max` octets (or one frame, if a frame
/// is larger), each ending on a frame boundary: what successive socket reads hand the engine
/// when every read ends between frames.
///
/// # Panics
/// When `stream` is not a sequence of whole frames.
pub fn read_chunks(stream: &Bytes, max: usize) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let (mut start, mut at) = (0, 0);
    while at < stream.len() {
        let size = u32::from_be_bytes(stream[at + 3..at + 7].try_into().expect("4 octets"));
        let end = at + size as usize + 8;
        assert!(end <= stream.len(), "a partial frame at {at}");
        if end - start > max && at > start {
            chunks.push(stream.slice(start..at));
            start = at;
        }
        at = end;
    }
    if start < at {
        chunks.push(stream.slice(start..at));
    }
    chunks
}

/// A client [`Connection`] after the handshake with RabbitMQ's defaults (frame_max
/// [`FRAME_MAX`]), with [`CHANNEL`] open and a no-ack consumer [`CONSUMER_TAG`] on it: ready
/// for [`delivery_stream`]. Scripted with the public API only: the broker's frames are encoded
/// and fed to `handle_input`, and everything the client sends or reports is drained.
///
/// # Panics
/// When the engine does not follow the script (a bug in the engine or here).
pub fn consuming_connection(now: Duration) -> Connection {
    let mut conn = Connection::client(ClientConfig::default(), now);
    let mut out = Transmit::new();
    let _ = conn.poll_transmit(now, &mut out);
    drain(&mut out);
    let mut feed = |conn: &mut Connection, channel: ChannelId, method: Method| {
        let mut wire = BytesMut::new();
        Frame::Method(channel, method)
            .encode(&mut wire)
            .expect("a handshake frame encodes");
        conn.handle_input(now, &mut wire);
        assert!(wire.is_empty());
        let _ = conn.poll_transmit(now, &mut out);
        drain(&mut out);
        std::iter::from_fn(|| conn.poll_event()).collect::<Vec<Event>>()
    };
    let mut server_properties = FieldTable::new();
    server_properties.insert("product", "RabbitMQ");
    let start = ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties,
        mechanisms: LongStr::from("PLAIN AMQPLAIN"),
        locales: LongStr::from("en_US"),
    };
    feed(&mut conn, ChannelId::CONNECTION, start.into());
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 60,
    };
    feed(&mut conn, ChannelId::CONNECTION, tune.into());
    let events = feed(&mut conn, ChannelId::CONNECTION, ConnectionOpenOk.into());
    assert!(
        matches!(events[..], [Event::Connected { .. }]),
        "{events:?}"
    );
    let channel = conn.open_channel().expect("a channel number is free");
    assert_eq!(channel, CHANNEL);
    let events = feed(&mut conn, channel, ChannelOpenOk.into());
    assert!(
        matches!(events[..], [Event::ChannelOpened(CHANNEL)]),
        "{events:?}"
    );
    let consume = BasicConsume {
        queue: ShortStr::from_static("bench"),
        consumer_tag: ShortStr::from_static(CONSUMER_TAG),
        no_ack: true,
        ..Default::default()
    };
    conn.channel(channel)
        .and_then(|mut ch| ch.call(consume))
        .expect("basic.consume is accepted");
    let consume_ok = BasicConsumeOk {
        consumer_tag: ShortStr::from_static(CONSUMER_TAG),
    };
    let events = feed(&mut conn, channel, consume_ok.into());
    assert!(matches!(events[..], [Event::Reply { .. }]), "{events:?}");
    conn
}

/// A 20-entry table such as a client's `connection.start-ok` properties or a queue's
/// x-arguments: strings, integers of several widths, booleans, a timestamp, a nested table
/// and an array.
pub fn field_table_20() -> FieldTable {
    let mut capabilities = FieldTable::new();
    for name in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
    ] {
        capabilities.insert(name, true);
    }
    let mut t = FieldTable::new();
    t.insert("product", "amqp-rs");
    t.insert("version", "0.1.0");
    t.insert("platform", "Rust");
    t.insert("copyright", "MIT OR Apache-2.0");
    t.insert("information", "https://example.invalid/amqp-rs");
    t.insert("connection_name", "orders-service@host-17");
    t.insert("capabilities", capabilities);
    t.insert("x-queue-type", "quorum");
    t.insert("x-message-ttl", 60_000i32);
    t.insert("x-max-length", 1_000_000i64);
    t.insert("x-max-length-bytes", 1_073_741_824i64);
    t.insert("x-overflow", "reject-publish");
    t.insert("x-dead-letter-exchange", "dlx");
    t.insert("x-dead-letter-routing-key", "orders.dead");
    t.insert("x-max-priority", 10u8);
    t.insert("x-single-active-consumer", true);
    t.insert("x-delivery-limit", 20i16);
    t.insert_short(
        ShortStr::from_static("x-created"),
        FieldValue::Timestamp(1_700_000_000),
    );
    t.insert(
        "x-routes",
        FieldArray(vec![
            FieldValue::LongStr(LongStr::from("eu-west")),
            FieldValue::LongStr(LongStr::from("us-east")),
            FieldValue::I32(3),
        ]),
    );
    t.insert("x-weight", 0.75f64);
    t
}

/// The name of a delivery stream of [`delivery_stream`]: the body size's label, and
/// `+headers` when `rich`.
pub fn stream_label(label: &str, rich: bool) -> String {
    if rich {
        format!("{label}+headers")
    } else {
        label.to_owned()
    }
}

/// Decodes every frame in `src` with our decoder, dropping each through
/// [`std::hint::black_box`]; returns how many there were.
///
/// # Panics
/// When `src` holds a malformed frame.
pub fn decode_all(decoder: &mut FrameDecoder, src: &mut BytesMut) -> usize {
    let mut frames = 0;
    while let Some(frame) = decoder.decode(src).expect("a valid stream") {
        std::hint::black_box(frame);
        frames += 1;
    }
    frames
}

/// The floor: walks a stream of whole frames reading only each 7-octet header, checking the
/// type octet and the `0xCE` end octet, and skipping the payload. Returns the number of
/// frames, or `None` at the first frame that is not well formed or not whole.
///
/// No decoder can do less and still find the frames; the benches report it next to
/// decoding the same stream.
pub fn scan_frames(mut stream: &[u8]) -> Option<usize> {
    let mut frames = 0;
    while let Some(header) = stream.get(..7) {
        if !matches!(header[0], 1 | 2 | 3 | 8) {
            return None;
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        let end = 7 + size;
        if *stream.get(end)? != 0xCE {
            return None;
        }
        stream = &stream[end + 1..];
        frames += 1;
    }
    stream.is_empty().then_some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_wire::FrameDecoder;

    #[test]
    fn a_delivery_stream_decodes_to_its_messages() {
        for (len, rich, frames_per_message) in [(16, false, 3), (200_000, true, 4)] {
            let stream = delivery_stream(3, len, rich);
            assert_eq!(scan_frames(&stream), Some(3 * frames_per_message));
            let mut src = BytesMut::from(&stream[..]);
            let mut decoder = FrameDecoder::new(FRAME_MAX);
            let mut body_octets = 0;
            while let Some(frame) = decoder.decode(&mut src).unwrap() {
                match frame {
                    Frame::Header(_, h) => assert_eq!(h.properties, delivery_properties(rich)),
                    Frame::Body(_, b) => body_octets += b.len(),
                    _ => {}
                }
            }
            assert!(src.is_empty());
            assert_eq!(body_octets, 3 * len);
        }
    }

    #[test]
    fn the_floor_refuses_a_bad_end_octet_and_a_partial_frame() {
        assert_eq!(scan_frames(&[8, 0, 0, 0, 0, 0, 0, 0xce]), Some(1));
        assert_eq!(scan_frames(&[8, 0, 0, 0, 0, 0, 0, 0x00]), None);
        assert_eq!(scan_frames(&[8, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(scan_frames(&[4, 0, 0, 0, 0, 0, 0, 0xce]), None);
    }

    #[test]
    fn drain_writes_everything() {
        let mut out = Transmit::new();
        out.push_publish(
            CHANNEL,
            &publish_method(),
            &publish_properties(),
            body(300_000),
            FRAME_MAX,
        )
        .unwrap();
        let len = out.remaining();
        assert_eq!(drain(&mut out), len);
        assert!(out.is_empty());
    }

    #[test]
    fn read_chunks_end_on_frame_boundaries_and_cover_the_stream() {
        let stream = delivery_stream(100, 16, false);
        let chunks = read_chunks(&stream, 1000);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= 1000));
        assert_eq!(chunks.concat(), stream[..]);
        for chunk in &chunks {
            assert!(scan_frames(chunk).is_some());
        }
        // A frame larger than `max` is a chunk of its own.
        let big = delivery_stream(2, 5000, false);
        assert_eq!(read_chunks(&big, 1000).concat(), big[..]);
    }

    #[test]
    fn a_consuming_connection_turns_the_stream_into_deliveries() {
        let now = Duration::ZERO;
        let mut conn = consuming_connection(now);
        for (len, rich) in [(16, false), (16, true), (200_000, false)] {
            let stream = delivery_stream(3, len, rich);
            let mut deliveries = 0;
            for chunk in read_chunks(&stream, 64 * 1024) {
                let mut src = BytesMut::from(&chunk[..]);
                conn.handle_input(now, &mut src);
                assert!(src.is_empty());
                while let Some(event) = conn.poll_event() {
                    let Event::Delivery { channel, delivery } = event else {
                        panic!("not a delivery: {event:?}");
                    };
                    assert_eq!(channel, CHANNEL);
                    assert_eq!(delivery.body.len(), len);
                    assert_eq!(delivery.properties, delivery_properties(rich));
                    deliveries += 1;
                }
            }
            assert_eq!(deliveries, 3);
        }
        let mut out = Transmit::new();
        let _ = conn.poll_transmit(now, &mut out);
        assert!(out.is_empty(), "a no-ack consumer sends nothing back");
        assert!(!conn.is_closed());
    }

    #[test]
    fn the_table_has_20_entries_and_round_trips() {
        let t = field_table_20();
        assert_eq!(t.len(), 20);
        let mut wire = BytesMut::new();
        t.encode(&mut wire);
        assert_eq!(FieldTable::decode(&wire.freeze()), Ok(t));
    }
}
