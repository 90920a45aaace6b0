//! Message content through the broker and back, byte for byte: empty, 1 MiB and 16 MiB
//! bodies cut into small frames, every field-table type in the headers, and every basic
//! property.

use std::time::Duration;

use amqp_client::{BasicProperties, Confirmation, ConsumeOptions, FieldTable, FieldValue};
use amqp_tests::{
    connect, connect_with_query, exclusive, next_delivery, publish_confirmed, unique,
};
use amqp_wire::{Decimal, FieldArray, ShortStr};
use bytes::Bytes;

/// A body whose every octet depends on its position, so a lost, doubled or reordered frame
/// shows.
fn patterned(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 12)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_round_trip_byte_exact_with_a_small_frame_max() {
    let conn = connect_with_query("frame_max=4096").await;
    // The client raises a frame_max under 8192 to 8192, the least RabbitMQ 4.1 accepts.
    let frame_max = conn.tune().frame_max as usize;
    assert!((4096..=8192).contains(&frame_max), "frame_max {frame_max}");
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("bodies");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    // Sizes around the frame boundary too: frame_max - 8 octets fill one body frame exactly.
    let sizes = [0, 1, frame_max - 8, frame_max - 7, 1 << 20, 16 << 20];
    for &size in &sizes {
        let c =
            publish_confirmed(&ch, "", &queue, BasicProperties::default(), patterned(size)).await;
        assert_eq!(c, Confirmation::Ack, "{size} octets");
    }
    // Half through basic.get, half through a consumer.
    for &size in &sizes[..3] {
        let got = ch.get(&queue, false).await.unwrap().expect("a message");
        assert_eq!(got.delivery.body.len(), size);
        assert!(got.delivery.body == patterned(size), "{size} octets differ");
        got.delivery.ack().await.unwrap();
    }
    let mut consumer = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    for &size in &sizes[3..] {
        let d = tokio::time::timeout(Duration::from_secs(60), next_delivery(&mut consumer))
            .await
            .unwrap();
        assert_eq!(d.body.len(), size);
        assert!(d.body == patterned(size), "{size} octets differ");
        d.ack().await.unwrap();
    }
    consumer.cancel().await.unwrap();
    conn.close().await.unwrap();
}

/// A table with a value of every type RabbitMQ knows (`CONFORMANCE.md` §5), nested ones
/// included.
fn every_type() -> FieldTable {
    let mut inner = FieldTable::new();
    inner.insert("deep", "down");
    inner.insert("n", -1i64);
    let mut nested_in_array = FieldTable::new();
    nested_in_array.insert("in-array", true);
    let array: FieldArray = FieldArray(vec![
        FieldValue::from(1i32),
        FieldValue::from("two"),
        FieldValue::Table(nested_in_array),
        FieldValue::Array(FieldArray(vec![FieldValue::Void, FieldValue::I8(-3)])),
        FieldValue::Timestamp(1_700_000_000),
    ]);
    let mut t = FieldTable::new();
    t.insert("bool-true", true);
    t.insert("bool-false", false);
    t.insert("i8", i8::MIN);
    t.insert("u8", u8::MAX);
    t.insert("i16", i16::MIN);
    t.insert("u16", u16::MAX);
    t.insert("i32", i32::MIN);
    t.insert("u32", u32::MAX);
    t.insert("i64", i64::MIN);
    t.insert("f32", 1.5f32);
    t.insert("f64", -2.25e100f64);
    t.insert(
        "decimal",
        Decimal {
            scale: 3,
            value: 123_456,
        },
    );
    t.insert("long-string", "héllo, wörld");
    t.insert("empty-string", "");
    t.insert("bytes", Bytes::from_static(&[0, 1, 2, 0xff, 0xfe]));
    t.insert("timestamp", FieldValue::Timestamp(1_234_567_890));
    t.insert("table", inner);
    t.insert("empty-table", FieldTable::new());
    t.insert("array", array);
    t.insert("empty-array", FieldArray(Vec::new()));
    t.insert("void", FieldValue::Void);
    t
}

#[tokio::test]
async fn every_field_table_type_round_trips_in_headers() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("headers");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let headers = every_type();
    let props = BasicProperties {
        headers: Some(headers.clone()),
        ..Default::default()
    };
    publish_confirmed(&ch, "", &queue, props.clone(), "consumed").await;
    publish_confirmed(&ch, "", &queue, props, "got").await;

    let mut consumer = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    let d = next_delivery(&mut consumer).await;
    let received = d.properties.headers.clone().expect("headers");
    // Entry by entry first, for a readable failure, then the whole table: a map, so the order
    // does not count (RabbitMQ 4 hands headers back sorted by name, 3.x as published).
    for (name, value) in headers.iter() {
        let name = name.to_str().unwrap();
        assert_eq!(received.get(name), Some(value), "header {name}");
    }
    assert_eq!(received, headers);
    d.ack().await.unwrap();
    // Without a prefetch the second message went to the consumer too: dropping the consumer
    // hands what it buffered back to the queue, for basic.get.
    consumer.cancel().await.unwrap();
    drop(consumer);

    let got = ch.get(&queue, false).await.unwrap().expect("a message");
    assert_eq!(got.delivery.properties.headers.as_ref(), Some(&headers));
    got.delivery.ack().await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn every_basic_property_round_trips() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("props");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let mut headers = FieldTable::new();
    headers.insert("k", "v");
    let props = BasicProperties {
        content_type: Some(ShortStr::from_static("application/json")),
        content_encoding: Some(ShortStr::from_static("gzip")),
        headers: Some(headers),
        delivery_mode: Some(2),
        priority: Some(7),
        correlation_id: Some(ShortStr::from_static("corr-1")),
        reply_to: Some(ShortStr::from_static("somewhere")),
        expiration: Some(ShortStr::from_static("600000")),
        message_id: Some(ShortStr::from_static("msg-1")),
        timestamp: Some(1_700_000_000),
        kind: Some(ShortStr::from_static("order.created")),
        // RabbitMQ checks user-id against the connection's user.
        user_id: Some(ShortStr::try_from(user_of_url().as_str()).unwrap()),
        app_id: Some(ShortStr::from_static("amqp-tests")),
        cluster_id: Some(ShortStr::from_static("cluster")),
    };
    publish_confirmed(&ch, "", &queue, props.clone(), "{}").await;
    // And a message with no properties at all.
    publish_confirmed(&ch, "", &queue, BasicProperties::default(), "").await;
    let got = ch.get(&queue, true).await.unwrap().expect("a message");
    assert_eq!(got.delivery.properties, props);
    let got = ch.get(&queue, true).await.unwrap().expect("a message");
    assert_eq!(got.delivery.properties, BasicProperties::default());
    assert!(got.delivery.body.is_empty());
    conn.close().await.unwrap();
}

/// The user name of `AMQP_URL`.
fn user_of_url() -> String {
    match amqp_tests::config().sasl {
        amqp_client::Sasl::Plain { username, .. } => username,
        _ => "guest".to_owned(),
    }
}
