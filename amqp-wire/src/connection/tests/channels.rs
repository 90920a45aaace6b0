//! Channels: numbers, open and close both ways, pipelined requests, errors and their scope.

use super::broker::Broker;
use crate::connection::{ClientConfig, ConnectionError, Event, Initiator, UsageError};
use crate::frame::method::Method;
use crate::frame::methods::{
    BasicCancel, BasicConsume, BasicConsumeOk, BasicQos, BasicRecover, ChannelClose,
    ChannelCloseOk, ChannelFlow, ChannelOpenOk, ConnectionBlocked, ConnectionClose,
    ConnectionCloseOk, ConnectionTune, ConnectionUnblocked, QueueDeclare, QueueDeclareOk,
    QueuePurge,
};
use crate::{ChannelId, ReplyCode, ShortStr};

fn declare(name: &'static str) -> QueueDeclare {
    QueueDeclare {
        queue: ShortStr::from_static(name),
        ..Default::default()
    }
}

#[test]
fn channel_numbers_are_the_lowest_free_and_reused_after_close_ok() {
    let mut b = Broker::connected();
    let one = b.open_channel();
    let two = b.open_channel();
    assert_eq!((one, two), (ChannelId(1), ChannelId(2)));
    b.conn
        .channel(one)
        .unwrap()
        .close(ReplyCode::SUCCESS, "bye")
        .unwrap();
    b.expect_method(1, "channel.close");
    // Not free until close-ok.
    assert_eq!(b.conn.open_channel().unwrap(), ChannelId(3));
    b.expect_method(3, "channel.open");
    b.send_method(3, ChannelOpenOk);
    b.send_method(1, ChannelCloseOk);
    let events = b.events();
    assert!(
        matches!(&events[..], [Event::ChannelOpened(ChannelId(3)), Event::ChannelClosed { channel: ChannelId(1), reason }]
        if reason.initiator == Initiator::Local && reason.code == ReplyCode::SUCCESS),
        "{events:?}"
    );
    assert_eq!(b.open_channel(), ChannelId(1));
}

#[test]
fn channel_max_bounds_the_numbers() {
    let tune = ConnectionTune {
        channel_max: 2,
        frame_max: 131_072,
        heartbeat: 0,
    };
    let mut b = Broker::connected_with(ClientConfig::default(), tune);
    b.open_channel();
    b.open_channel();
    assert_eq!(b.conn.open_channel(), Err(UsageError::ChannelsExhausted(2)));
}

#[test]
fn a_thousand_channels_open_and_close() {
    let mut b = Broker::connected();
    for n in 1..=1000u16 {
        assert_eq!(b.open_channel(), ChannelId(n));
    }
    for n in 1..=1000u16 {
        b.conn
            .channel(ChannelId(n))
            .unwrap()
            .close(ReplyCode::SUCCESS, "")
            .unwrap();
        b.expect_method(n, "channel.close");
        b.send_method(n, ChannelCloseOk);
    }
    assert_eq!(b.events().len(), 1000);
    assert_eq!(b.open_channel(), ChannelId(1));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let mut channel = b.conn.channel(ch).unwrap();
    let first = channel.call(declare("a")).unwrap().unwrap();
    let second = channel
        .call(QueuePurge {
            queue: ShortStr::from_static("a"),
            no_wait: false,
        })
        .unwrap()
        .unwrap();
    let none = channel
        .call(QueueDeclare {
            no_wait: true,
            ..declare("b")
        })
        .unwrap();
    assert_eq!(none, None, "nowait: no reply to wait for");
    b.expect_method(1, "queue.declare");
    b.expect_method(1, "queue.purge");
    b.expect_method(1, "queue.declare");
    b.send_method(
        1,
        QueueDeclareOk {
            queue: ShortStr::from_static("a"),
            message_count: 3,
            consumer_count: 0,
        },
    );
    b.send_method(1, crate::frame::methods::QueuePurgeOk { message_count: 3 });
    let events = b.events();
    assert!(
        matches!(&events[..], [
        Event::Reply { request: r1, method: Method::QueueDeclareOk(_), .. },
        Event::Reply { request: r2, method: Method::QueuePurgeOk(_), .. },
    ] if *r1 == first && *r2 == second),
        "{events:?}"
    );
}

#[test]
fn a_reply_nobody_asked_for_closes_the_connection_with_505() {
    let mut b = Broker::connected();
    b.open_channel();
    b.send_method(1, QueueDeclareOk::default());
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(
        (close.reply_code, close.class_id, close.method_id),
        (ReplyCode::UNEXPECTED_FRAME, 50, 11)
    );
    assert!(matches!(
        b.events().as_slice(),
        [Event::Closed(ConnectionError::Protocol(_))]
    ));
    // Everything but close-ok is dropped now.
    b.send_method(1, QueueDeclareOk::default());
    b.expect_silence();
    b.send_method(0, ConnectionCloseOk);
    assert!(b.conn.is_closed());
    assert!(b.events().is_empty(), "the error is reported once");
}

#[test]
fn a_frame_on_a_channel_that_is_not_open_is_504() {
    let mut b = Broker::connected();
    b.send_method(7, ChannelOpenOk);
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(close.reply_code, ReplyCode::CHANNEL_ERROR);
}

#[test]
fn a_broker_channel_close_is_answered_and_only_ends_that_channel() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let other = b.open_channel();
    let request = b
        .conn
        .channel(ch)
        .unwrap()
        .call(QueueDeclare {
            passive: true,
            ..declare("missing")
        })
        .unwrap();
    b.expect_method(1, "queue.declare");
    b.send_method(
        1,
        ChannelClose {
            reply_code: ReplyCode::NOT_FOUND,
            reply_text: ShortStr::from_static("NOT_FOUND - no queue 'missing' in vhost '/'"),
            class_id: 50,
            method_id: 10,
        },
    );
    b.expect_method(1, "channel.close-ok");
    let events = b.events();
    let [Event::ChannelClosed { channel, reason }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        (*channel, reason.code, reason.class_id, reason.method_id),
        (ch, ReplyCode::NOT_FOUND, 50, 10)
    );
    assert_eq!(reason.initiator, Initiator::Peer);
    assert!(request.is_some());
    // The request fails with the channel; a new call on the number fails at once.
    assert_eq!(
        b.conn.channel(ch).unwrap_err(),
        UsageError::ChannelNotOpen(ch)
    );
    assert!(
        b.conn.channel(other).is_ok(),
        "a soft error leaves other channels alone"
    );
    // The number is free again.
    assert_eq!(b.open_channel(), ch);
}

#[test]
fn closes_that_cross_are_both_confirmed() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    b.conn
        .channel(ch)
        .unwrap()
        .close(ReplyCode::SUCCESS, "")
        .unwrap();
    b.expect_method(1, "channel.close");
    assert!(matches!(
        b.conn.channel(ch),
        Err(UsageError::ChannelClosed { .. })
    ));
    // Meanwhile the broker closed it with an error, and a delivery was in flight.
    b.deliver(1, "c", 1, b"dropped");
    b.send_method(
        1,
        ChannelClose {
            reply_code: ReplyCode::PRECONDITION_FAILED,
            ..Default::default()
        },
    );
    b.expect_method(1, "channel.close-ok");
    assert!(
        b.events().is_empty(),
        "still waiting for the broker's close-ok"
    );
    b.send_method(1, ChannelCloseOk);
    let events = b.events();
    assert!(
        matches!(&events[..], [Event::ChannelClosed { reason, .. }] if reason.code == ReplyCode::PRECONDITION_FAILED)
    );
}

#[test]
fn a_broker_connection_close_ends_everything_with_its_reason() {
    let mut b = Broker::connected();
    b.open_channel();
    b.send_method(
        0,
        ConnectionClose {
            reply_code: ReplyCode::CONNECTION_FORCED,
            reply_text: ShortStr::from_static(
                "CONNECTION_FORCED - broker forced connection closure",
            ),
            class_id: 0,
            method_id: 0,
        },
    );
    b.expect_method(0, "connection.close-ok");
    let events = b.events();
    assert!(
        matches!(&events[..], [Event::Closed(e)] if e.reply_code() == Some(ReplyCode::CONNECTION_FORCED))
    );
    assert!(b.conn.is_closed());
    assert_eq!(
        b.conn.channel(ChannelId(1)).unwrap_err(),
        UsageError::ConnectionNotOpen
    );
}

#[test]
fn a_client_close_waits_for_close_ok_and_crossing_closes_are_answered() {
    let mut b = Broker::connected();
    b.conn.close(ReplyCode::SUCCESS, "done");
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(
        (close.reply_code, close.reply_text.to_str()),
        (ReplyCode::SUCCESS, Ok("done"))
    );
    assert!(!b.conn.is_closed());
    b.send_method(0, ConnectionCloseOk);
    assert!(b.conn.is_closed());
    assert!(
        matches!(b.events().as_slice(), [Event::Closed(ConnectionError::Closed(r))] if r.initiator == Initiator::Local)
    );

    let mut b = Broker::connected();
    b.conn.close(ReplyCode::SUCCESS, "done");
    b.expect_method(0, "connection.close");
    b.send_method(
        0,
        ConnectionClose {
            reply_code: ReplyCode::CONNECTION_FORCED,
            ..Default::default()
        },
    );
    b.expect_method(0, "connection.close-ok");
    assert!(b.conn.is_closed());
}

#[test]
fn consumer_tags_are_checked_and_server_cancel_is_an_event() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let consume = BasicConsume {
        queue: ShortStr::from_static("q"),
        consumer_tag: ShortStr::from_static("c1"),
        ..Default::default()
    };
    b.conn.channel(ch).unwrap().call(consume.clone()).unwrap();
    b.expect_method(1, "basic.consume");
    b.send_method(
        1,
        BasicConsumeOk {
            consumer_tag: ShortStr::from_static("c1"),
        },
    );
    b.events();
    assert_eq!(
        b.conn.channel(ch).unwrap().call(consume),
        Err(UsageError::ConsumerTagInUse(ShortStr::from_static("c1")))
    );
    b.expect_silence();
    // RabbitMQ cancels with nowait set: no cancel-ok is sent back.
    b.send_method(
        1,
        BasicCancel {
            consumer_tag: ShortStr::from_static("c1"),
            no_wait: true,
        },
    );
    b.expect_silence();
    assert_eq!(
        b.events(),
        [Event::ConsumerCancelled {
            channel: ch,
            consumer_tag: ShortStr::from_static("c1")
        }]
    );
    assert_eq!(b.conn.channel(ch).unwrap().consumers().count(), 0);
}

#[test]
fn methods_that_rabbitmq_punishes_with_540_are_refused_locally() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    let mut channel = b.conn.channel(ch).unwrap();
    assert!(
        channel
            .call(BasicQos {
                prefetch_size: 1,
                ..Default::default()
            })
            .is_err()
    );
    assert!(channel.call(BasicRecover { requeue: false }).is_err());
    assert!(channel.call(ChannelFlow { active: false }).is_err());
    assert!(matches!(
        channel.call(ChannelCloseOk),
        Err(UsageError::NotAllowed(_))
    ));
    b.expect_silence();
}

#[test]
fn broker_flow_is_answered_and_pauses_publishing() {
    let mut b = Broker::connected();
    let ch = b.open_channel();
    b.send_method(1, ChannelFlow { active: false });
    let Method::ChannelFlowOk(ok) = b.expect_method(1, "channel.flow-ok") else {
        unreachable!()
    };
    assert!(!ok.active);
    assert_eq!(
        b.events(),
        [Event::Flow {
            channel: ch,
            active: false
        }]
    );
    let publish = crate::frame::methods::BasicPublish::default();
    let r = b.conn.channel(ch).unwrap().basic_publish(
        publish,
        &Default::default(),
        bytes::Bytes::new(),
    );
    assert_eq!(r, Err(UsageError::FlowPaused));
}

#[test]
fn blocked_and_unblocked_are_events() {
    let mut b = Broker::connected();
    b.send_method(
        0,
        ConnectionBlocked {
            reason: ShortStr::from_static("low on memory"),
        },
    );
    assert!(b.conn.is_blocked());
    b.send_method(0, ConnectionUnblocked);
    assert!(!b.conn.is_blocked());
    assert_eq!(
        b.events(),
        [
            Event::Blocked {
                reason: ShortStr::from_static("low on memory")
            },
            Event::Unblocked
        ]
    );
}

#[test]
fn update_secret_is_a_request_on_channel_zero() {
    let mut b = Broker::connected();
    let request = b.conn.update_secret("token-2".into(), "refresh").unwrap();
    let Method::ConnectionUpdateSecret(m) = b.expect_method(0, "connection.update-secret") else {
        unreachable!()
    };
    assert_eq!(m.new_secret, "token-2".into());
    b.send_method(0, crate::frame::methods::ConnectionUpdateSecretOk);
    assert!(
        matches!(&b.events()[..], [Event::Reply { channel: ChannelId(0), request: r, .. }] if *r == request)
    );
}

#[test]
fn a_channel_can_be_opened_on_a_chosen_number() {
    let mut b = Broker::connected();
    b.conn.open_channel_at(ChannelId(7)).unwrap();
    b.expect_method(7, "channel.open");
    b.send_method(7, ChannelOpenOk);
    assert_eq!(b.events(), [Event::ChannelOpened(ChannelId(7))]);
    assert_eq!(
        b.conn.open_channel_at(ChannelId(7)),
        Err(UsageError::ChannelsExhausted(2047))
    );
    assert_eq!(
        b.conn.open_channel_at(ChannelId(0)),
        Err(UsageError::ChannelNotOpen(ChannelId(0)))
    );
    assert_eq!(
        b.conn.open_channel_at(ChannelId(2048)),
        Err(UsageError::ChannelNotOpen(ChannelId(2048)))
    );
    assert_eq!(
        b.open_channel(),
        ChannelId(1),
        "the lowest free number is still 1"
    );
}
