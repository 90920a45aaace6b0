//! What RabbitMQ 3.x and 4.x do differently, each tested on the version that has it: the
//! broker's version comes from `connection.start`, and every test asserts what that version
//! does (CI runs this file against 3.10 and 4.0; nothing here is skipped on either).
//!
//! - Quorum queues: 4.0 gives them a delivery limit of 20 by default (3.x: none); a message
//!   requeued past it is dead-lettered. `x-delivery-count` counts the redeliveries on both.
//! - Deprecated features (transient non-exclusive queues, global QoS): 4.x may refuse them,
//!   per node configuration (CI's 4.x node denies both). The test asks the node whether they
//!   are permitted, with `RABBITMQCTL`, and checks the broker does what it says, and that the
//!   client reports a refusal as the channel error it is, with the broker's code and text.
//! - The broker's `frame_max` floor: 4096 (the spec's) before 4.1, 8192 from 4.1 on, which
//!   refuses less by resetting the socket. The client never asks for less than 8192.
//! - Stream filtering (`x-stream-filter-value` on publish, `x-stream-filter` on consume):
//!   3.13 and later skip the chunks that hold no wanted value; older brokers ignore both.

use std::time::Duration;

use amqp_client::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionConfig, ConnectionError,
    ConsumeOptions, Error, FieldTable, FieldValue, Initiator, QueueDeclareOptions, Recovery,
    ReplyCode,
};
use amqp_tests::{
    RawSession, config, connect, deleting_afterwards, exclusive, get_within, next_delivery,
    publish_confirmed, rabbitmqctl, unique,
};
use amqp_wire::{Frame, FrameDecoder, Method};
use bytes::BytesMut;
use futures_util::StreamExt;

/// The broker's `(major, minor)`, from the `version` server property.
fn version(conn: &Connection) -> (u32, u32) {
    let props = conn.server_properties();
    let text = props
        .get("version")
        .and_then(FieldValue::as_str)
        .expect("a version server property")
        .to_owned();
    let mut parts = text.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => panic!("cannot read the broker version {text:?}"),
    }
}

fn durable_of_type(kind: &str, mut arguments: FieldTable) -> QueueDeclareOptions {
    arguments.insert("x-queue-type", kind);
    QueueDeclareOptions {
        durable: true,
        arguments,
        ..Default::default()
    }
}

fn delivery_count(headers: Option<&FieldTable>) -> Option<i64> {
    headers?.get("x-delivery-count")?.as_i64()
}

/// Takes the one message of `queue` with `basic.get` and requeues it with `basic.nack`,
/// `times` times, checking `x-delivery-count` on each: absent at first, then 1, 2, ...
async fn requeue_times(ch: &Channel, queue: &str, times: i64) {
    for n in 0..times {
        let got = get_within(ch, queue, "the requeued message is back").await;
        let count = delivery_count(got.delivery.properties.headers.as_ref());
        assert_eq!(
            count.unwrap_or(0),
            n,
            "x-delivery-count of delivery {}",
            n + 1
        );
        got.delivery.nack(true).await.expect("basic.nack, requeue");
    }
}

#[tokio::test]
async fn quorum_queues_have_a_delivery_limit_of_20_from_4_0() {
    let conn = connect().await;
    let version = version(&conn);
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    // Dead letters go to an exclusive queue of the test's, by the default exchange.
    let dead = unique("delivery-limit-dlq");
    ch.queue_declare(&dead, exclusive()).await.unwrap();
    let queue = unique("delivery-limit");
    let mut args = FieldTable::new();
    args.insert("x-dead-letter-exchange", "");
    args.insert("x-dead-letter-routing-key", dead.as_str());
    ch.queue_declare(&queue, durable_of_type("quorum", args))
        .await
        .unwrap();
    deleting_afterwards(&queue, async {
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), "again").await;
        // 21 deliveries, each requeued: the 21st carries x-delivery-count 20, the limit, and
        // its requeue is the one past it.
        requeue_times(&ch, &queue, 21).await;
        if version >= (4, 0) {
            // The 21st requeue passes the limit: the message is dead-lettered, not requeued.
            let dead_letter = get_within(&ch, &dead, "the message dead-lettered").await;
            assert_eq!(&dead_letter.delivery.body[..], b"again");
            let reason = dead_letter
                .delivery
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("x-first-death-reason"))
                .and_then(FieldValue::as_str)
                .map(str::to_owned);
            assert_eq!(reason.as_deref(), Some("delivery_limit"));
            dead_letter.delivery.ack().await.unwrap();
            assert!(ch.get(&queue, false).await.unwrap().is_none());
        } else {
            // No limit: it is back once more, and nothing was dead-lettered.
            let again = get_within(&ch, &queue, "delivery 22").await;
            let count = delivery_count(again.delivery.properties.headers.as_ref());
            assert_eq!(count, Some(21));
            again.delivery.ack().await.unwrap();
            assert!(ch.get(&dead, false).await.unwrap().is_none());
        }
    })
    .await;
    conn.close().await.unwrap();
}

/// Whether the node behind `RABBITMQCTL` permits the deprecated feature `name`: always on
/// brokers from before deprecated features were a thing (3.10, 3.11).
fn permitted(name: &str) -> bool {
    let expr = format!(
        "case code:ensure_loaded(rabbit_deprecated_features) of \
         {{module, _}} -> rabbit_deprecated_features:is_permitted({name}); _ -> true end."
    );
    let out = rabbitmqctl::run(&["eval", &expr])
        .unwrap_or_else(|e| panic!("asking the node about {name}: {e}"));
    // Denied, the node also logs an error about it, which the CLI may print before the answer.
    match out.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some("true") => true,
        Some("false") => false,
        _ => panic!("is_permitted({name}) printed {out:?}"),
    }
}

/// Runs [`permitted`] off the runtime: `rabbitmqctl` takes about a second.
async fn node_permits(name: &'static str) -> bool {
    tokio::task::spawn_blocking(move || permitted(name))
        .await
        .expect("the rabbitmqctl task")
}

#[tokio::test]
async fn transient_non_exclusive_queues_are_refused_where_the_node_denies_them() {
    // Without recovery: the refusal closes the connection, and that is what is checked.
    let config = ConnectionConfig {
        recovery: Recovery {
            enabled: false,
            ..Recovery::default()
        },
        ..config()
    };
    let conn = Connection::connect_with(config).await.unwrap();
    let allowed = node_permits("transient_nonexcl_queues").await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("transient-shared");
    let transient_shared = QueueDeclareOptions {
        durable: false,
        exclusive: false,
        auto_delete: true,
        ..Default::default()
    };
    let declared = ch.queue_declare(&queue, transient_shared).await;
    if allowed {
        declared.expect("a transient non-exclusive queue where the node permits it");
        ch.queue_delete(&queue, Default::default()).await.unwrap();
        conn.close().await.unwrap();
        return;
    }
    // RabbitMQ 4 refuses it with a connection error, 541, naming the feature.
    let Err(Error::Connection(ConnectionError::Closed(reason))) = declared else {
        panic!("expected the connection closed with 541, got {declared:?}");
    };
    assert_eq!(reason.code, ReplyCode::INTERNAL_ERROR, "{reason:?}");
    assert_eq!(
        (reason.class_id, reason.method_id),
        (50, 10),
        "queue.declare"
    );
    assert_eq!(reason.initiator, Initiator::Peer);
    let text = reason.text.to_str().unwrap_or_default();
    assert!(text.contains("transient_nonexcl_queues"), "{text}");
    assert!(matches!(
        conn.open_channel().await,
        Err(Error::Connection(ConnectionError::Closed(_)))
    ));
    // Exclusive queues are not deprecated: a new connection declares one.
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    ch.queue_declare(&unique("exclusive"), exclusive())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn global_qos_is_per_channel_only_where_the_node_permits_it() {
    let conn = connect().await;
    let allowed = node_permits("global_qos").await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("global-qos");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for body in ["one", "two"] {
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), body).await;
    }
    // Accepted either way: a node that denies global QoS applies it per consumer instead.
    ch.qos(1, true).await.unwrap();
    let mut first = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    let mut second = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    let one = next_delivery(&mut first).await;
    assert_eq!(&one.body[..], b"one");
    if allowed {
        // One unacknowledged message for the whole channel: "two" waits for the ack.
        let early = tokio::time::timeout(Duration::from_millis(500), second.next()).await;
        assert!(
            early.is_err(),
            "a second delivery before the ack: {early:?}"
        );
        one.ack().await.unwrap();
        // Either consumer may have it now.
        let two = tokio::select! {
            d = next_delivery(&mut first) => d,
            d = next_delivery(&mut second) => d,
        };
        assert_eq!(&two.body[..], b"two");
        two.ack().await.unwrap();
    } else {
        // RabbitMQ 4, global QoS denied: a prefetch of 1 per consumer, so both are out.
        let two = next_delivery(&mut second).await;
        assert_eq!(&two.body[..], b"two");
        one.ack().await.unwrap();
        two.ack().await.unwrap();
    }
    conn.close().await.unwrap();
}

/// Publishes `count` messages with `x-stream-filter-value` = `value` and waits for all their
/// confirms, so they end up in chunks of their own.
async fn publish_filtered(ch: &Channel, stream: &str, value: &str, count: usize) {
    let mut confirms = Vec::with_capacity(count);
    for i in 0..count {
        let mut headers = FieldTable::new();
        headers.insert("x-stream-filter-value", value);
        let props = BasicProperties {
            headers: Some(headers),
            ..Default::default()
        };
        let body = format!("{value}-{i}");
        let confirm = ch
            .publish("", stream, Default::default(), props, body)
            .await;
        confirms.push(confirm.expect("publish"));
    }
    for confirm in confirms {
        let outcome = tokio::time::timeout(Duration::from_secs(10), confirm).await;
        assert_eq!(
            outcome.expect("a confirm within 10 s").unwrap(),
            Confirmation::Ack
        );
    }
}

/// Reads `stream` from the first offset with `x-stream-filter` = `wanted` until the last
/// `wanted` message; returns how many deliveries had another filter value.
async fn read_filtered(ch: &Channel, stream: &str, wanted: &str, count: usize) -> usize {
    let mut arguments = FieldTable::new();
    arguments.insert("x-stream-offset", "first");
    arguments.insert("x-stream-filter", wanted);
    let options = ConsumeOptions {
        arguments,
        ..Default::default()
    };
    let mut consumer = ch.consume(stream, options).await.expect("basic.consume");
    let (mut next, mut others) = (0, 0);
    while next < count {
        let d = next_delivery(&mut consumer).await;
        let value = d.properties.headers.as_ref();
        let value = value.and_then(|h| h.get("x-stream-filter-value"));
        // Filtering skips whole chunks: the client still checks each message.
        if value.and_then(FieldValue::as_str) == Some(wanted) {
            assert_eq!(&d.body[..], format!("{wanted}-{next}").as_bytes());
            next += 1;
        } else {
            others += 1;
        }
        d.ack().await.unwrap();
    }
    consumer.cancel().await.unwrap();
    others
}

#[tokio::test]
async fn stream_filtering_skips_unwanted_chunks_from_3_13() {
    const EACH: usize = 50;
    let conn = connect().await;
    let version = version(&conn);
    let ch = conn.open_channel().await.unwrap();
    let stream = unique("filtered-stream");
    ch.queue_declare(&stream, durable_of_type("stream", FieldTable::new()))
        .await
        .unwrap();
    deleting_afterwards(&stream, async {
        ch.confirm_select().await.unwrap();
        publish_filtered(&ch, &stream, "red", EACH).await;
        publish_filtered(&ch, &stream, "blue", EACH).await;
        // Streams need a prefetch and acks.
        ch.qos(100, false).await.unwrap();
        let others = read_filtered(&ch, &stream, "blue", EACH).await;
        if version >= (3, 13) {
            assert_eq!(others, 0, "red chunks were delivered despite the filter");
        } else {
            // No filtering before 3.13: the red messages come first, all of them.
            assert_eq!(others, EACH);
        }
    })
    .await;
    conn.close().await.unwrap();
}

/// Tunes a raw session to `frame_max` and says whether the broker opens the connection.
/// A refusal must be a `connection.close` with 530 (3.x, 4.0) or a reset socket (4.1 and
/// later): anything else fails the test.
fn opens_with_frame_max(frame_max: u32) -> bool {
    let (mut s, tune) = RawSession::open_to_tune();
    s.tune_ok_and_open(frame_max, tune.channel_max);
    let mut decoder = FrameDecoder::new(0);
    let mut buf = BytesMut::new();
    let answer = loop {
        match decoder.decode(&mut buf) {
            Ok(None) => {}
            decoded => break decoded,
        }
        // Whatever arrives (the first read of at least one octet), or nothing at a reset.
        let more = s.read_until_close(1);
        if more.is_empty() {
            assert!(buf.is_empty(), "the socket ended inside a frame");
            return false;
        }
        buf.extend_from_slice(&more);
    };
    match answer {
        Ok(Some(Frame::Method(_, Method::ConnectionOpenOk(_)))) => true,
        Ok(Some(Frame::Method(_, Method::ConnectionClose(close)))) => {
            assert_eq!(close.reply_code, ReplyCode::NOT_ALLOWED, "{close:?}");
            let text = close.reply_text.to_str().unwrap_or_default();
            assert!(text.contains("frame_max"), "{text}");
            false
        }
        other => panic!("after tune-ok with frame_max {frame_max}: {other:?}"),
    }
}

#[tokio::test]
async fn the_broker_s_frame_max_floor_is_4096_before_4_1_and_8192_from_it() {
    let conn = connect().await;
    let version = version(&conn);
    let config = conn.tune();
    conn.close().await.unwrap();
    let floor = if version >= (4, 1) { 8192 } else { 4096 };
    let opened = tokio::task::spawn_blocking(move || {
        [floor - 1, floor, 8192].map(|f| (f, opens_with_frame_max(f)))
    })
    .await
    .unwrap();
    assert_eq!(
        opened,
        [(floor - 1, false), (floor, true), (8192, true)],
        "RabbitMQ {version:?}"
    );
    // The client never asks for less than 8192, which every version accepts.
    assert!(config.frame_max >= 8192 || config.frame_max == 0);
    let small = amqp_tests::connect_with_query("frame_max=4096").await;
    assert_eq!(small.tune().frame_max, 8192);
    small.close().await.unwrap();
}
