//! The codec against the real broker: byte-exact vectors in, frames our decoder must accept out.

use amqp_tests::{RawSession, unique};
use amqp_wire::methods::{BasicGet, BasicPublish, ConfirmSelect, QueueDeclare};
use amqp_wire::{
    BasicProperties, ChannelId, ContentHeader, Decimal, DecodeError, FieldArray, FieldTable,
    FieldValue, Frame, FrameDecoder, Method, ProtocolVersion, ReplyCode, ShortStr, Transmit,
};
use bytes::{Buf, Bytes, BytesMut};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect()
}

/// Reads the content (header and body frames) that follows a content method on `channel`.
fn read_content(session: &mut RawSession, channel: ChannelId) -> (ContentHeader, Vec<u8>) {
    let Frame::Header(ch, header) = session.recv() else {
        panic!("expected a content header")
    };
    assert_eq!(ch, channel);
    let mut body = Vec::new();
    let mut frames = 0;
    while (body.len() as u64) < header.body_size {
        let Frame::Body(ch, chunk) = session.recv() else {
            panic!("expected a body frame")
        };
        assert_eq!(ch, channel);
        assert!(chunk.len() + 8 <= session.frame_max as usize);
        body.extend_from_slice(&chunk);
        frames += 1;
    }
    assert_eq!(
        body.len() as u64,
        header.body_size,
        "body longer than announced"
    );
    assert!(header.body_size == 0 || frames > 0);
    (header, body)
}

fn send_transmit(session: &mut RawSession, mut t: Transmit) {
    let mut out = Vec::new();
    while t.has_remaining() {
        let chunk = t.chunk();
        out.extend_from_slice(chunk);
        let n = chunk.len();
        t.advance(n);
    }
    session.write_raw(&out);
}

fn declare_exclusive_queue(session: &mut RawSession, channel: ChannelId) -> ShortStr {
    let name = ShortStr::try_from(unique("codec")).expect("short name");
    session.send_method(
        channel,
        QueueDeclare {
            queue: name.clone(),
            exclusive: true,
            ..Default::default()
        },
    );
    match session.recv() {
        Frame::Method(_, Method::QueueDeclareOk(ok)) => assert_eq!(ok.queue, name),
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    name
}

#[test]
fn vectors_publish_with_confirms_and_a_mandatory_return_before_its_ack() {
    let mut s = RawSession::open();
    s.write_raw(&hex("01 00 01 00 00 00 05 00 14 00 0A 00 CE")); // vector 3: channel.open
    assert!(matches!(
        s.recv(),
        Frame::Method(ChannelId(1), Method::ChannelOpenOk(_))
    ));
    s.write_raw(&hex("01 00 01 00 00 00 05 00 55 00 0A 00 CE")); // vector 14: confirm.select
    assert!(matches!(
        s.recv(),
        Frame::Method(ChannelId(1), Method::ConfirmSelectOk(_))
    ));

    // Vectors 4, 5, 6: a persistent "hello" to the default exchange, routing key "q".
    s.write_raw(&hex(
        "01 00 01 00 00 00 0A 00 3C 00 28 00 00 00 01 71 00 CE \
         02 00 01 00 00 00 0F 00 3C 00 00 00 00 00 00 00 00 00 05 10 00 02 CE \
         03 00 01 00 00 00 05 68 65 6C 6C 6F CE",
    ));
    match s.recv() {
        Frame::Method(ChannelId(1), Method::BasicAck(ack)) => {
            assert_eq!((ack.delivery_tag.0, ack.multiple), (1, false));
        }
        other => panic!("expected basic.ack 1, got {other:?}"),
    }

    // Vector 7: mandatory to amq.direct with no binding for "q": return 312, then ack 2.
    s.write_raw(&hex(
        "01 00 01 00 00 00 14 00 3C 00 28 00 00 0A 61 6D 71 2E 64 69 72 65 63 74 01 71 01 CE",
    ));
    s.write_raw(&hex(
        "02 00 01 00 00 00 0E 00 3C 00 00 00 00 00 00 00 00 00 02 00 00 CE",
    ));
    s.write_raw(&hex("03 00 01 00 00 00 02 68 69 CE"));
    match s.recv() {
        Frame::Method(ChannelId(1), Method::BasicReturn(ret)) => {
            assert_eq!(ret.reply_code, ReplyCode::NO_ROUTE);
            assert_eq!(ret.reply_text, "NO_ROUTE");
            assert_eq!(ret.exchange, "amq.direct");
        }
        other => panic!("expected basic.return, got {other:?}"),
    }
    let (_, body) = read_content(&mut s, ChannelId(1));
    assert_eq!(body, b"hi");
    match s.recv() {
        Frame::Method(ChannelId(1), Method::BasicAck(ack)) => assert_eq!(ack.delivery_tag.0, 2),
        other => panic!("expected basic.ack 2, got {other:?}"),
    }
}

/// Vector 21's table, every tag RabbitMQ knows, as the `headers` property.
fn all_tags() -> FieldTable {
    let mut t = FieldTable::new();
    t.insert("bool", true);
    t.insert("i8", -2i8);
    t.insert("u8", 200u8);
    t.insert("i16", -300i16);
    t.insert("u16", 60_000u16);
    t.insert("i32", -70_000i32);
    t.insert("u32", 4_000_000_000u32);
    t.insert("i64", -5_000_000_000i64);
    t.insert("f32", 1.5f32);
    t.insert("f64", 2.25f64);
    t.insert(
        "dec",
        Decimal {
            scale: 2,
            value: 12_345,
        },
    );
    t.insert("lstr", "hi");
    t.insert("bin", Bytes::from_static(&[0, 1]));
    t.insert_short(
        ShortStr::from_static("ts"),
        FieldValue::Timestamp(1_700_000_000),
    );
    t.insert("tbl", [("k", "v")].into_iter().collect::<FieldTable>());
    t.insert(
        "arr",
        FieldArray(vec![FieldValue::I32(1), FieldValue::from("a")]),
    );
    t.insert_short(ShortStr::from_static("void"), FieldValue::Void);
    t
}

#[test]
fn every_property_and_field_type_survives_the_broker() {
    let mut s = RawSession::open();
    s.open_channel(1);
    let queue = declare_exclusive_queue(&mut s, ChannelId(1));
    let props = BasicProperties {
        content_type: Some(ShortStr::from_static("application/octet-stream")),
        content_encoding: Some(ShortStr::from_static("identity")),
        headers: Some(all_tags()),
        delivery_mode: Some(2),
        priority: Some(5),
        correlation_id: Some(ShortStr::from_static("corr-1")),
        reply_to: Some(ShortStr::from_static("replies")),
        expiration: Some(ShortStr::from_static("600000")),
        message_id: Some(ShortStr::from_static("msg-1")),
        timestamp: Some(1_700_000_000),
        kind: Some(ShortStr::from_static("test.kind")),
        user_id: Some(ShortStr::from_static("guest")),
        app_id: Some(ShortStr::from_static("amqp-rs")),
        cluster_id: None,
    };
    let publish = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let mut t = Transmit::new();
    t.push_publish(
        ChannelId(1),
        &publish,
        &props,
        Bytes::from_static(b"payload"),
        s.frame_max,
    )
    .expect("encode");
    send_transmit(&mut s, t);
    s.send_method(
        ChannelId(1),
        BasicGet {
            queue,
            no_ack: true,
        },
    );
    let Frame::Method(_, Method::BasicGetOk(ok)) = s.recv() else {
        panic!("expected get-ok")
    };
    assert!(!ok.redelivered);
    let (header, body) = read_content(&mut s, ChannelId(1));
    assert_eq!(body, b"payload");
    assert_eq!(header.properties, props);
}

#[test]
fn large_bodies_are_split_and_reassembled_by_frame_max() {
    let mut s = RawSession::open();
    s.open_channel(1);
    let queue = declare_exclusive_queue(&mut s, ChannelId(1));
    let publish = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    for size in [0usize, 1, 4088, 4089, 131_064, 131_065, 1 << 20] {
        let body = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let mut t = Transmit::new();
        // A frame_max smaller than negotiated is always allowed for what we send.
        let frame_max = if size < 8192 { 4096 } else { s.frame_max };
        t.push_publish(
            ChannelId(1),
            &publish,
            &BasicProperties::default(),
            body.clone(),
            frame_max,
        )
        .expect("encode");
        send_transmit(&mut s, t);
        s.send_method(
            ChannelId(1),
            BasicGet {
                queue: queue.clone(),
                no_ack: true,
            },
        );
        let Frame::Method(_, Method::BasicGetOk(_)) = s.recv() else {
            panic!("expected get-ok")
        };
        let (header, got) = read_content(&mut s, ChannelId(1));
        assert_eq!(header.body_size, size as u64);
        assert_eq!(got, body, "body of {size} octets");
    }
}

#[test]
fn a_refused_protocol_version_is_recognised() {
    let addr = amqp_tests::broker_addr();
    let mut stream = std::net::TcpStream::connect(&addr)
        .unwrap_or_else(|e| panic!("no RabbitMQ at {addr} ({e}); run scripts/ensure-rabbitmq"));
    std::io::Write::write_all(&mut stream, b"AMQP\x00\x00\x09\x02").expect("write");
    // The broker writes its header and closes, sometimes with a reset: keep what arrived.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 64];
    while let Ok(n @ 1..) = std::io::Read::read(&mut stream, &mut chunk) {
        reply.extend_from_slice(&chunk[..n]);
    }
    let mut src = BytesMut::from(&reply[..]);
    match FrameDecoder::new(4096).decode(&mut src) {
        Err(DecodeError::ProtocolHeader(version)) => {
            // 3.x offers 0-9-1; 4.x answers unknown 0-9-x variants the same way.
            assert_eq!(version, ProtocolVersion::AMQP_0_9_1);
        }
        other => panic!("expected a protocol header, got {other:?} from {reply:?}"),
    }
}

#[test]
fn confirm_select_and_declare_encoded_by_the_codec_are_accepted() {
    let mut s = RawSession::open();
    s.open_channel(3);
    s.send_method(ChannelId(3), ConfirmSelect { no_wait: false });
    assert!(matches!(
        s.recv(),
        Frame::Method(ChannelId(3), Method::ConfirmSelectOk(_))
    ));
    // A passive declare of a missing queue: channel.close 404 naming queue.declare (50/10).
    s.send_method(
        ChannelId(3),
        QueueDeclare {
            queue: ShortStr::try_from(unique("missing")).expect("short"),
            passive: true,
            ..Default::default()
        },
    );
    match s.recv() {
        Frame::Method(ChannelId(3), Method::ChannelClose(close)) => {
            assert_eq!(close.reply_code, ReplyCode::NOT_FOUND);
            assert_eq!((close.class_id, close.method_id), (50, 10));
        }
        other => panic!("expected channel.close 404, got {other:?}"),
    }
}
