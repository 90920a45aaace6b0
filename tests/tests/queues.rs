//! Queue features driven by x-arguments and properties: message TTL (per message and per
//! queue), queue expiry, dead lettering and its `x-death` header, priorities, and the quorum
//! and stream queue types.
//!
//! Quorum and stream queues must be durable and non-exclusive; each test deletes its own,
//! even when it fails.

use std::time::Duration;

use amqp_client::{
    BasicProperties, Confirmation, ConsumeOptions, FieldTable, FieldValue, QueueDeclareOptions,
    ReplyCode,
};
use amqp_tests::{
    connect, deleting_afterwards, exclusive, message_count, next_delivery, passive,
    publish_confirmed, unique,
};
use amqp_wire::ShortStr;

fn exclusive_with(arguments: FieldTable) -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        arguments,
        ..Default::default()
    }
}

#[tokio::test]
async fn per_message_ttl_expires_the_message() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("msg-ttl");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let short = BasicProperties {
        expiration: Some(ShortStr::from_static("50")),
        ..Default::default()
    };
    let long = BasicProperties {
        expiration: Some(ShortStr::from_static("600000")),
        ..Default::default()
    };
    publish_confirmed(&ch, "", &queue, short, "expires").await;
    publish_confirmed(&ch, "", &queue, long.clone(), "stays").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = ch
        .get(&queue, true)
        .await
        .unwrap()
        .expect("the long-lived one");
    assert_eq!(&got.delivery.body[..], b"stays");
    assert_eq!(got.delivery.properties.expiration, long.expiration);
    assert!(ch.get(&queue, true).await.unwrap().is_none());
    // An expiration that is not a decimal number is 406.
    let bad = BasicProperties {
        expiration: Some(ShortStr::from_static("soon")),
        ..Default::default()
    };
    let err = ch
        .publish("", &queue, Default::default(), bad, "x")
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(
        err.reply_code(),
        Some(ReplyCode::PRECONDITION_FAILED),
        "{err}"
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn queue_message_ttl_expires_messages() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("queue-ttl");
    let mut args = FieldTable::new();
    args.insert("x-message-ttl", 50i32);
    ch.queue_declare(&queue, exclusive_with(args))
        .await
        .unwrap();
    ch.confirm_select().await.unwrap();
    for i in 0..3 {
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), format!("m{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ch.get(&queue, true).await.unwrap().is_none());
    let info = ch
        .queue_declare(
            &queue,
            exclusive_with([("x-message-ttl", 50i32)].into_iter().collect()),
        )
        .await
        .unwrap();
    assert_eq!(info.message_count, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn an_unused_queue_expires() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    // Durable and not exclusive (allowed on 4.x), and it deletes itself.
    let queue = unique("expires");
    let mut args = FieldTable::new();
    args.insert("x-expires", 200i32);
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            durable: true,
            arguments: args,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ch.queue_declare(&queue, passive()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Longer than the expiry between probes, in case a passive declare counts as use.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let probe = conn.open_channel().await.unwrap();
        match probe.queue_declare(&queue, passive()).await {
            Ok(_) => {
                probe.close().await.unwrap();
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "queue never expired"
                );
            }
            Err(e) => {
                assert_eq!(e.reply_code(), Some(ReplyCode::NOT_FOUND), "{e}");
                break;
            }
        }
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn dead_lettering_adds_an_x_death_header() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let dead = unique("dlq");
    ch.queue_declare(&dead, exclusive()).await.unwrap();
    let work = unique("work");
    let mut args = FieldTable::new();
    args.insert("x-dead-letter-exchange", "");
    args.insert("x-dead-letter-routing-key", dead.as_str());
    ch.queue_declare(&work, exclusive_with(args)).await.unwrap();
    ch.confirm_select().await.unwrap();
    let mut headers = FieldTable::new();
    headers.insert("app", "kept");
    let props = BasicProperties {
        headers: Some(headers),
        ..Default::default()
    };
    publish_confirmed(&ch, "", &work, props, "poison").await;

    // Rejected without requeue: dead-lettered through the default exchange to `dead`.
    let got = ch.get(&work, false).await.unwrap().expect("the message");
    got.delivery.reject(false).await.unwrap();
    let dead_lettered = amqp_tests::get_within(&ch, &dead, "nothing dead-lettered")
        .await
        .delivery;
    assert_eq!(&dead_lettered.body[..], b"poison");
    let headers = dead_lettered.properties.headers.as_ref().expect("headers");
    assert_eq!(
        headers.get("app").and_then(FieldValue::as_str),
        Some("kept")
    );
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else {
        panic!("no x-death array in {headers:?}")
    };
    assert_eq!(deaths.0.len(), 1, "{deaths:?}");
    let FieldValue::Table(death) = &deaths.0[0] else {
        panic!("x-death entry is not a table: {deaths:?}")
    };
    let field = |name: &str| {
        death
            .get(name)
            .unwrap_or_else(|| panic!("x-death has no {name}: {death:?}"))
    };
    assert_eq!(field("count").as_i64(), Some(1));
    assert_eq!(field("reason").as_str(), Some("rejected"));
    assert_eq!(field("queue").as_str(), Some(work.as_str()));
    assert_eq!(field("exchange").as_str(), Some(""));
    match field("routing-keys") {
        FieldValue::Array(keys) => {
            assert_eq!(keys.0.len(), 1);
            assert_eq!(keys.0[0].as_str(), Some(work.as_str()));
        }
        other => panic!("routing-keys is not an array: {other:?}"),
    }
    let FieldValue::Timestamp(time) = field("time") else {
        panic!("time is not a timestamp: {death:?}")
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        time.abs_diff(now) < 600,
        "x-death time {time} far from now {now}"
    );
    // RabbitMQ 3.10 adds the first death's details as headers of their own.
    assert_eq!(
        headers
            .get("x-first-death-reason")
            .and_then(FieldValue::as_str),
        Some("rejected")
    );
    dead_lettered.ack().await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn higher_priority_messages_come_first() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("priority");
    let mut args = FieldTable::new();
    args.insert("x-max-priority", 10i32);
    ch.queue_declare(&queue, exclusive_with(args))
        .await
        .unwrap();
    ch.confirm_select().await.unwrap();
    for (priority, body) in [
        (None, "none"),
        (Some(1), "low"),
        (Some(9), "high"),
        (Some(5), "mid"),
    ] {
        let props = BasicProperties {
            priority,
            ..Default::default()
        };
        assert_eq!(
            publish_confirmed(&ch, "", &queue, props, body).await,
            Confirmation::Ack
        );
    }
    let mut order = Vec::new();
    while let Some(got) = ch.get(&queue, true).await.unwrap() {
        order.push(String::from_utf8(got.delivery.body.to_vec()).unwrap());
    }
    assert_eq!(order, ["high", "mid", "low", "none"]);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_quorum_queue_with_confirms_and_a_consumer() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("quorum");
    let mut args = FieldTable::new();
    args.insert("x-queue-type", "quorum");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            durable: true,
            arguments: args.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    deleting_afterwards(&queue, async {
        ch.confirm_select().await.unwrap();
        let mut confirms = Vec::new();
        for i in 0..20u32 {
            let props = BasicProperties {
                delivery_mode: Some(2),
                ..Default::default()
            };
            confirms.push(
                ch.publish(
                    "",
                    &queue,
                    Default::default(),
                    props,
                    i.to_be_bytes().to_vec(),
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            assert_eq!(c.await.unwrap(), Confirmation::Ack);
        }
        // A quorum queue must be durable: declaring it transient is 406.
        let probe = conn.open_channel().await.unwrap();
        let err = probe
            .queue_declare(
                &queue,
                QueueDeclareOptions {
                    durable: false,
                    arguments: args.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.reply_code(),
            Some(ReplyCode::PRECONDITION_FAILED),
            "{err}"
        );

        ch.qos(5, false).await.unwrap();
        let mut consumer = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
        for i in 0..20u32 {
            let d = next_delivery(&mut consumer).await;
            assert_eq!(&d.body[..], &i.to_be_bytes());
            assert!(!d.redelivered);
            d.ack().await.unwrap();
        }
        consumer.cancel().await.unwrap();
        assert_eq!(message_count(&ch, &queue).await, 0);
    })
    .await;
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_stream_read_from_the_first_offset_with_prefetch_and_acks() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("stream");
    let mut args = FieldTable::new();
    args.insert("x-queue-type", "stream");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            durable: true,
            arguments: args,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    deleting_afterwards(&queue, async {
        ch.confirm_select().await.unwrap();
        let mut confirms = Vec::new();
        for i in 0..50u32 {
            confirms.push(
                ch.publish(
                    "",
                    &queue,
                    Default::default(),
                    BasicProperties::default(),
                    i.to_be_bytes().to_vec(),
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            assert_eq!(c.await.unwrap(), Confirmation::Ack);
        }
        // Streams need a prefetch and manual acks; the prefetch (10) is smaller than the
        // stream, so acks are what let the rest through.
        ch.qos(10, false).await.unwrap();
        let mut consumer = consume_from_first(&ch, &queue).await;
        let mut last_offset = -1;
        for i in 0..50u32 {
            let d = next_delivery(&mut consumer).await;
            assert_eq!(&d.body[..], &i.to_be_bytes());
            let offset = d
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("x-stream-offset"))
                .and_then(FieldValue::as_i64)
                .expect("x-stream-offset header");
            assert!(
                offset > last_offset,
                "offsets ascend: {offset} after {last_offset}"
            );
            last_offset = offset;
            d.ack().await.unwrap();
        }
        consumer.cancel().await.unwrap();
        // Reading does not remove anything from a stream: a second reader from the start
        // sees the first message again.
        let reader = conn.open_channel().await.unwrap();
        reader.qos(1, false).await.unwrap();
        let mut again = consume_from_first(&reader, &queue).await;
        let d = next_delivery(&mut again).await;
        assert_eq!(&d.body[..], &0u32.to_be_bytes());
        d.ack().await.unwrap();
        // A stream sends whole chunks, past the prefetch: the buffer of 1 is full and more
        // wait. Cancelling must not wait for them to be read, and what is handed back must
        // not be nacked (RabbitMQ refuses a nack on a stream with 540, closing the connection).
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::time::timeout(Duration::from_secs(10), again.cancel())
            .await
            .expect("cancel waited for an unread buffer")
            .unwrap();
        drop(again);
        // The same for a consumer dropped unread.
        let dropped = consume_from_first(&reader, &queue).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(dropped);
        reader.queue_declare(&queue, passive()).await.unwrap();
        ch.queue_declare(&queue, passive()).await.unwrap();
        assert!(!conn.is_closed(), "{:?}", conn.close_reason());
    })
    .await;
    conn.close().await.unwrap();
}

/// A consumer of the stream `queue` from its first message (`x-stream-offset` "first").
async fn consume_from_first(ch: &amqp_client::Channel, queue: &str) -> amqp_client::Consumer {
    let mut offset = FieldTable::new();
    offset.insert("x-stream-offset", "first");
    ch.consume(
        queue,
        ConsumeOptions {
            arguments: offset,
            ..Default::default()
        },
    )
    .await
    .expect("basic.consume on the stream")
}
