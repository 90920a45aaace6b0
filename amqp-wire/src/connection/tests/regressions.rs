//! Faults found by the property tests in `amqp-wire/tests/engine_props.rs`, each replayed here
//! with the scripted broker.

use super::broker::Broker;
use crate::connection::{ConnectionError, Event, UsageError};
use crate::frame::method::Method;
use crate::frame::methods::{BasicConsume, BasicConsumeOk, QueueDeclareOk};
use crate::{DecodeError, ReplyCode, ShortStr};

/// A connection sends one `connection.close` at most: once it is closing, bytes that do not
/// decode end it without a second close (which carried another code than the first).
#[test]
fn garbage_while_closing_sends_no_second_close() {
    let mut b = Broker::connected();
    b.open_channel();
    b.send_method(1, QueueDeclareOk::default());
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(close.reply_code, ReplyCode::UNEXPECTED_FRAME);
    b.events();
    b.send_raw(&[0x90, 0, 0, 0, 0, 0, 0, 0xce]);
    b.expect_silence();
    assert!(b.conn.is_closed());
    assert!(b.events().is_empty(), "the error is reported once");
    assert!(
        matches!(b.conn.error(), Some(ConnectionError::Protocol(r)) if r.code == close.reply_code)
    );

    // The same after a close the application asked for.
    let mut b = Broker::connected();
    b.conn.close(ReplyCode::SUCCESS, "bye");
    b.expect_method(0, "connection.close");
    b.send_raw(&[0x90, 0, 0, 0, 0, 0, 0, 0xce]);
    b.expect_silence();
    assert!(b.conn.is_closed());
}

/// Only the reply to our protocol header is a version refusal. After `connection.start`, the
/// octets "AMQP" are a frame of unknown type 'A': 501, with a close saying so.
#[test]
fn a_protocol_header_after_the_handshake_is_a_frame_error() {
    let mut b = Broker::connected();
    b.send_raw(b"AMQP\x00\x00\x09\x01");
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(close.reply_code, ReplyCode::FRAME_ERROR);
    let error = ConnectionError::Decode(DecodeError::UnknownFrameType(b'A'));
    assert_eq!(b.events(), [Event::Closed(error.clone())]);
    assert_eq!(b.conn.error(), Some(&error));
    assert_eq!(error.reply_code(), Some(ReplyCode::FRAME_ERROR));
}

/// A consume whose consume-ok is still awaited holds its tag: a second consume with it,
/// pipelined behind the first, would be a reused tag to RabbitMQ (530, connection closed).
#[test]
fn a_consumer_tag_awaiting_consume_ok_is_in_use() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let tag = ShortStr::from_static("c1");
    let consume = BasicConsume {
        queue: ShortStr::from_static("q"),
        consumer_tag: tag.clone(),
        ..Default::default()
    };
    let mut channel = b.conn.channel(ch).unwrap();
    channel.call(consume.clone()).unwrap();
    assert_eq!(
        channel.call(consume.clone()),
        Err(UsageError::ConsumerTagInUse(tag.clone()))
    );
    let no_wait = BasicConsume {
        no_wait: true,
        ..consume.clone()
    };
    assert_eq!(
        channel.call(no_wait),
        Err(UsageError::ConsumerTagInUse(tag.clone()))
    );
    // A server-named consumer holds no tag of its own until consume-ok.
    let server_named = BasicConsume {
        consumer_tag: ShortStr::new(),
        ..consume.clone()
    };
    channel.call(server_named.clone()).unwrap();
    channel.call(server_named).unwrap();
    b.expect_method(1, "basic.consume");
    b.expect_method(1, "basic.consume");
    b.expect_method(1, "basic.consume");
    b.expect_silence();
    b.send_method(
        1,
        BasicConsumeOk {
            consumer_tag: tag.clone(),
        },
    );
    assert_eq!(
        b.conn.channel(ch).unwrap().call(consume),
        Err(UsageError::ConsumerTagInUse(tag))
    );
}

/// RabbitMQ sends consume-ok (and cancel-ok) from the queue's process, so the reply to a
/// request pipelined behind a consume can arrive first (seen live: `basic.consume` then
/// `basic.get` answered get-empty, then consume-ok). It answers its own request; the
/// consume-ok still answers the consume. Any other reply out of order stays a violation.
#[test]
fn a_reply_may_overtake_consume_ok_and_cancel_ok() {
    use crate::frame::methods::{
        BasicCancel, BasicCancelOk, BasicGet, BasicGetEmpty, QueueDeclare,
    };

    let mut b = Broker::connected();
    let ch = b.open_channel();
    let tag = ShortStr::from_static("c1");
    let mut channel = b.conn.channel(ch).unwrap();
    let consume = channel
        .call(BasicConsume {
            queue: ShortStr::from_static("q"),
            consumer_tag: tag.clone(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let cancel = channel
        .call(BasicCancel {
            consumer_tag: tag.clone(),
            no_wait: false,
        })
        .unwrap()
        .unwrap();
    let get = channel
        .call(BasicGet {
            queue: ShortStr::from_static("q"),
            no_ack: false,
        })
        .unwrap()
        .unwrap();
    let declare = channel.call(QueueDeclare::default()).unwrap().unwrap();
    for name in [
        "basic.consume",
        "basic.cancel",
        "basic.get",
        "queue.declare",
    ] {
        b.expect_method(1, name);
    }
    b.send_method(1, BasicGetEmpty);
    b.send_method(
        1,
        BasicConsumeOk {
            consumer_tag: tag.clone(),
        },
    );
    b.send_method(
        1,
        BasicCancelOk {
            consumer_tag: tag.clone(),
        },
    );
    b.send_method(1, QueueDeclareOk::default());
    let answered: Vec<_> = b
        .events()
        .into_iter()
        .map(|e| match e {
            Event::GetReply {
                request,
                message: None,
                ..
            } => (request, "basic.get-empty"),
            Event::Reply {
                request, method, ..
            } => (request, method.name()),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        answered,
        [
            (get, "basic.get-empty"),
            (consume, "basic.consume-ok"),
            (cancel, "basic.cancel-ok"),
            (declare, "queue.declare-ok"),
        ]
    );
    assert!(!b.conn.is_closed());

    // Only consumes and cancels can be overtaken: a declare-ok while a get waits is still
    // a protocol violation.
    let mut channel = b.conn.channel(ch).unwrap();
    channel
        .call(BasicGet {
            queue: ShortStr::from_static("q"),
            no_ack: false,
        })
        .unwrap();
    channel.call(QueueDeclare::default()).unwrap();
    b.expect_method(1, "basic.get");
    b.expect_method(1, "queue.declare");
    b.send_method(1, QueueDeclareOk::default());
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(close.reply_code, ReplyCode::UNEXPECTED_FRAME);
}
