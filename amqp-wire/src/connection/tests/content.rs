//! Content both ways: publishes framed by frame_max, deliveries and get-ok and returns
//! assembled, confirms resolved per tag, acks checked, and every sequencing violation.

use bytes::Bytes;

use super::broker::Broker;
use crate::connection::{ClientConfig, Confirmation, ConnectionError, Event, UsageError};
use crate::frame::content::{BasicProperties, ContentHeader};
use crate::frame::method::Method;
use crate::frame::methods::{
    BasicAck, BasicConsume, BasicConsumeOk, BasicDeliver, BasicGet, BasicGetEmpty, BasicGetOk,
    BasicNack, BasicPublish, BasicReturn, ConfirmSelect, ConfirmSelectOk, ConnectionTune, TxSelect,
};
use crate::{ChannelId, DeliveryTag, Frame, ReplyCode, ShortStr};

fn publish(mandatory: bool) -> BasicPublish {
    BasicPublish {
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("k"),
        mandatory,
        immediate: false,
    }
}

fn confirm_channel(b: &mut Broker) -> ChannelId {
    let ch = b.open_channel();
    b.conn
        .channel(ch)
        .unwrap()
        .call(ConfirmSelect { no_wait: false })
        .unwrap();
    b.expect_method(ch.0, "confirm.select");
    b.send_method(ch.0, ConfirmSelectOk);
    b.events();
    ch
}

#[test]
fn publishes_are_cut_by_the_negotiated_frame_max() {
    let tune = ConnectionTune {
        channel_max: 0,
        frame_max: 8192,
        heartbeat: 0,
    };
    let mut b = Broker::connected_with(ClientConfig::default(), tune);
    let ch = b.open_channel();
    let body = Bytes::from(vec![7u8; 20_000]);
    let tag = b
        .conn
        .channel(ch)
        .unwrap()
        .basic_publish(publish(false), &BasicProperties::default(), body)
        .unwrap();
    assert_eq!(tag, None, "not in confirm mode");
    b.expect_method(1, "basic.publish");
    let Frame::Header(_, header) = b.recv() else {
        panic!("no header")
    };
    assert_eq!(header.body_size, 20_000);
    let sizes: Vec<usize> = std::iter::from_fn(|| match b.try_recv() {
        Some(Frame::Body(_, chunk)) => Some(chunk.len()),
        _ => None,
    })
    .collect();
    assert_eq!(sizes, [8184, 8184, 3632]);
}

#[test]
fn a_header_that_does_not_fit_frame_max_is_refused() {
    let tune = ConnectionTune {
        channel_max: 0,
        frame_max: 4096,
        heartbeat: 0,
    };
    let mut b = Broker::connected_with(ClientConfig::default(), tune);
    let ch = b.open_channel();
    let mut headers = crate::FieldTable::new();
    headers.insert("big", "x".repeat(5000).as_str());
    let props = BasicProperties {
        headers: Some(headers),
        ..Default::default()
    };
    let r = b
        .conn
        .channel(ch)
        .unwrap()
        .basic_publish(publish(false), &props, Bytes::new());
    assert!(matches!(r, Err(UsageError::FrameTooLarge { .. })));
    b.expect_silence();
}

#[test]
fn deliveries_are_assembled_and_acks_are_checked() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let consume = BasicConsume {
        queue: ShortStr::from_static("q"),
        consumer_tag: ShortStr::from_static("c"),
        ..Default::default()
    };
    b.conn.channel(ch).unwrap().call(consume).unwrap();
    b.expect_method(1, "basic.consume");
    b.send_method(
        1,
        BasicConsumeOk {
            consumer_tag: ShortStr::from_static("c"),
        },
    );
    b.events();
    b.deliver(1, "c", 1, b"one");
    b.deliver(1, "c", 2, b"");
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    b.deliver(1, "c", 3, &big);
    let events = b.events();
    let bodies: Vec<&[u8]> = events
        .iter()
        .map(|e| match e {
            Event::Delivery { channel, delivery } if *channel == ch => &delivery.body[..],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bodies, [&b"one"[..], b"", &big[..]]);
    let mut channel = b.conn.channel(ch).unwrap();
    assert_eq!(channel.unacked(), 3);
    channel.basic_ack(DeliveryTag(2), false).unwrap();
    assert_eq!(
        channel.basic_ack(DeliveryTag(2), false),
        Err(UsageError::UnknownDeliveryTag(2)),
        "double ack"
    );
    channel.basic_nack(DeliveryTag(3), true, true).unwrap();
    assert_eq!(channel.unacked(), 0);
    assert_eq!(
        channel.basic_reject(DeliveryTag(9), false),
        Err(UsageError::UnknownDeliveryTag(9))
    );
    b.expect_method(1, "basic.ack");
    let Method::BasicNack(nack) = b.expect_method(1, "basic.nack") else {
        unreachable!()
    };
    assert!(nack.multiple && nack.requeue);
    b.expect_silence();
}

#[test]
fn a_split_body_interleaved_with_another_channel_is_reassembled() {
    let mut b = Broker::connected();
    b.open_channel();
    b.open_channel();
    let deliver = |tag| BasicDeliver {
        consumer_tag: ShortStr::from_static("c"),
        delivery_tag: DeliveryTag(tag),
        ..Default::default()
    };
    b.send(Frame::Method(ChannelId(1), deliver(1).into()));
    b.send(Frame::Method(ChannelId(2), deliver(1).into()));
    b.send(Frame::Header(
        ChannelId(1),
        ContentHeader {
            body_size: 4,
            ..Default::default()
        },
    ));
    b.send(Frame::Header(
        ChannelId(2),
        ContentHeader {
            body_size: 2,
            ..Default::default()
        },
    ));
    b.send(Frame::Body(ChannelId(1), Bytes::from_static(b"ab")));
    b.send(Frame::Body(ChannelId(2), Bytes::from_static(b"xy")));
    b.send(Frame::Body(ChannelId(1), Bytes::from_static(b"cd")));
    let events = b.events();
    let got: Vec<(u16, &[u8])> = events
        .iter()
        .map(|e| match e {
            Event::Delivery { channel, delivery } => (channel.0, &delivery.body[..]),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, [(2, &b"xy"[..]), (1, &b"abcd"[..])]);
}

/// Sends `frames` on channel 1 after a handshake and an open; returns the client's close.
fn violation(frames: Vec<Frame>) -> (ReplyCode, Vec<Event>) {
    let mut b = Broker::connected();
    b.open_channel();
    for f in frames {
        b.send(f);
    }
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    (close.reply_code, b.events())
}

#[test]
fn content_sequencing_violations_close_the_connection_with_505_or_501() {
    let ch = ChannelId(1);
    let deliver = || Frame::Method(ch, BasicDeliver::default().into());
    let header = |size| {
        Frame::Header(
            ch,
            ContentHeader {
                body_size: size,
                ..Default::default()
            },
        )
    };
    let body = |b: &'static [u8]| Frame::Body(ch, Bytes::from_static(b));
    let cases = [
        (
            "body without a header",
            vec![body(b"x")],
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "header without a method",
            vec![header(1)],
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "body where the header belongs",
            vec![deliver(), body(b"x")],
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "method where the header belongs",
            vec![deliver(), deliver()],
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "method in the middle of the body",
            vec![deliver(), header(4), body(b"ab"), deliver()],
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "body longer than announced",
            vec![deliver(), header(2), body(b"abc")],
            ReplyCode::FRAME_ERROR,
        ),
        (
            "a second header",
            vec![deliver(), header(2), header(2)],
            ReplyCode::UNEXPECTED_FRAME,
        ),
    ];
    for (what, frames, code) in cases {
        let (got, events) = violation(frames);
        assert_eq!(got, code, "{what}");
        assert!(
            matches!(&events[..], [.., Event::Closed(ConnectionError::Protocol(r))] if r.code == code),
            "{what}: {events:?}"
        );
    }
}

#[test]
fn malformed_bytes_send_a_close_with_the_decoders_code_and_stop() {
    let mut b = Broker::connected();
    b.send_raw(&[1, 0, 1, 0, 0, 0, 4, 0, 60, 0, 80, 0x00]); // bad frame end
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(close.reply_code, ReplyCode::FRAME_ERROR);
    assert!(
        b.conn.is_closed(),
        "an untrustworthy stream is not read further"
    );
    assert!(matches!(
        b.events().as_slice(),
        [Event::Closed(ConnectionError::Decode(_))]
    ));
}

#[test]
fn a_message_over_the_limit_closes_its_channel_before_the_body_is_buffered() {
    let mut b = Broker::connected_with(
        ClientConfig {
            max_message_size: 1000,
            ..Default::default()
        },
        super::broker::TUNE,
    );
    let ch = b.open_channel();
    b.send(Frame::Method(ch, BasicDeliver::default().into()));
    b.send(Frame::Header(
        ch,
        ContentHeader {
            body_size: 1001,
            ..Default::default()
        },
    ));
    let Method::ChannelClose(close) = b.expect_method(1, "channel.close") else {
        unreachable!()
    };
    assert_eq!(close.reply_code, ReplyCode::PRECONDITION_FAILED);
    // Its body frames, still in flight, are dropped without complaint.
    b.send(Frame::Body(ch, Bytes::from(vec![0u8; 1001])));
    b.expect_silence();
    b.send_method(1, crate::frame::methods::ChannelCloseOk);
    let events = b.events();
    assert!(
        matches!(&events[..], [Event::ChannelClosed { reason, .. }] if reason.code == ReplyCode::PRECONDITION_FAILED)
    );
    assert!(!b.conn.is_closed());
}

#[test]
fn get_ok_and_get_empty_answer_their_requests() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let mut channel = b.conn.channel(ch).unwrap();
    let first = channel
        .call(BasicGet {
            queue: ShortStr::from_static("q"),
            no_ack: false,
        })
        .unwrap()
        .unwrap();
    let second = channel
        .call(BasicGet {
            queue: ShortStr::from_static("q"),
            no_ack: true,
        })
        .unwrap()
        .unwrap();
    b.expect_method(1, "basic.get");
    b.expect_method(1, "basic.get");
    let ok = BasicGetOk {
        delivery_tag: DeliveryTag(1),
        message_count: 4,
        ..Default::default()
    };
    b.send_content(1, ok, BasicProperties::default(), b"msg", 100);
    b.send_method(1, BasicGetEmpty);
    let events = b.events();
    assert!(
        matches!(&events[..], [
        Event::GetReply { request: r1, message: Some((d, 4)), .. },
        Event::GetReply { request: r2, message: None, .. },
    ] if *r1 == first && *r2 == second && &d.body[..] == b"msg"),
        "{events:?}"
    );
    assert_eq!(b.conn.channel(ch).unwrap().unacked(), 1);
}

#[test]
fn confirms_resolve_exactly_the_right_tags() {
    let mut b = Broker::connected();
    let ch = confirm_channel(&mut b);
    let mut channel = b.conn.channel(ch).unwrap();
    let tags: Vec<u64> = (0..5)
        .map(|_| {
            channel
                .basic_publish(publish(false), &BasicProperties::default(), Bytes::new())
                .unwrap()
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(tags, [1, 2, 3, 4, 5]);
    assert_eq!(channel.unconfirmed(), 5);
    b.send_method(
        1,
        BasicAck {
            delivery_tag: DeliveryTag(2),
            multiple: false,
        },
    );
    b.send_method(
        1,
        BasicNack {
            delivery_tag: DeliveryTag(4),
            multiple: true,
            requeue: false,
        },
    );
    b.send_method(
        1,
        BasicAck {
            delivery_tag: DeliveryTag(5),
            multiple: true,
        },
    );
    let outcomes: Vec<(u64, Confirmation)> = b
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Confirm { tag, outcome, .. } => (tag.0, outcome),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (2, Confirmation::Ack),
            (1, Confirmation::Nack),
            (3, Confirmation::Nack),
            (4, Confirmation::Nack),
            (5, Confirmation::Ack)
        ]
    );
    assert_eq!(b.conn.channel(ch).unwrap().unconfirmed(), 0);
}

#[test]
fn a_return_is_attached_to_the_confirm_of_its_publish() {
    let mut b = Broker::connected();
    let ch = confirm_channel(&mut b);
    let mut channel = b.conn.channel(ch).unwrap();
    channel
        .basic_publish(publish(false), &BasicProperties::default(), Bytes::new())
        .unwrap();
    channel
        .basic_publish(
            publish(true),
            &BasicProperties::default(),
            Bytes::from_static(b"lost"),
        )
        .unwrap();
    let ret = BasicReturn {
        reply_code: ReplyCode::NO_ROUTE,
        reply_text: ShortStr::from_static("NO_ROUTE"),
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("k"),
    };
    b.send_content(1, ret, BasicProperties::default(), b"lost", 100);
    assert!(b.events().is_empty(), "the return waits for its ack");
    b.send_method(
        1,
        BasicAck {
            delivery_tag: DeliveryTag(2),
            multiple: true,
        },
    );
    let events = b.events();
    let [
        Event::Confirm {
            tag: t1,
            outcome: Confirmation::Ack,
            ..
        },
        Event::Confirm {
            tag: t2,
            outcome: Confirmation::Returned(r),
            ..
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (t1.0, t2.0, &r.body[..], r.reply_code),
        (1, 2, &b"lost"[..], ReplyCode::NO_ROUTE)
    );
}

#[test]
fn a_return_outside_confirm_mode_is_its_own_event() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let ret = BasicReturn {
        reply_code: ReplyCode::NO_ROUTE,
        ..Default::default()
    };
    b.send_content(1, ret, BasicProperties::default(), b"x", 100);
    assert!(matches!(&b.events()[..], [Event::Returned { channel, .. }] if *channel == ch));
}

#[test]
fn a_confirm_for_a_tag_never_published_closes_the_channel() {
    let mut b = Broker::connected();
    confirm_channel(&mut b);
    b.send_method(
        1,
        BasicAck {
            delivery_tag: DeliveryTag(7),
            multiple: false,
        },
    );
    let Method::ChannelClose(close) = b.expect_method(1, "channel.close") else {
        unreachable!()
    };
    assert_eq!(
        (close.reply_code, close.class_id, close.method_id),
        (ReplyCode::PRECONDITION_FAILED, 60, 80)
    );
}

#[test]
fn confirm_mode_and_transactions_do_not_mix() {
    let mut b = Broker::connected();
    let ch = confirm_channel(&mut b);
    assert_eq!(
        b.conn.channel(ch).unwrap().call(TxSelect),
        Err(UsageError::ConfirmAndTx)
    );
    let tx = b.open_channel();
    b.conn.channel(tx).unwrap().call(TxSelect).unwrap();
    assert_eq!(
        b.conn.channel(tx).unwrap().call(ConfirmSelect::default()),
        Err(UsageError::ConfirmAndTx)
    );
}

#[test]
fn immediate_is_refused_locally() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let p = BasicPublish {
        immediate: true,
        ..publish(false)
    };
    assert!(matches!(
        b.conn
            .channel(ch)
            .unwrap()
            .basic_publish(p, &BasicProperties::default(), Bytes::new()),
        Err(UsageError::NotAllowed(_))
    ));
    b.expect_silence();
}
