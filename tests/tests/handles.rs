//! A channel lives as long as a handle of it: `Channel` clones, its consumers, and the
//! unsettled deliveries taken from it. When the last one is dropped, the channel is closed
//! on the broker, so its number is free again and its unacknowledged messages come back.

use std::time::Duration;

use amqp_client::{BasicProperties, Channel, ChannelId, Connection};
use amqp_tests::{connect, exclusive, message_count, next_delivery, publish_confirmed, unique};

/// Waits until `id` is free again on `conn` (channel numbers are reused lowest first), at
/// most 10 s.
async fn wait_freed(conn: &Connection, id: ChannelId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let probe = conn.open_channel().await.expect("channel.open");
        if probe.id() == id {
            return;
        }
        drop(probe);
        assert!(
            tokio::time::Instant::now() < deadline,
            "channel {} still open 10 s after its last handle was dropped",
            id.0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `queue` holds `count` ready messages, at most 10 s.
async fn wait_ready(ch: &Channel, queue: &str, count: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while message_count(ch, queue).await != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} never held {count} ready messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection, a channel to watch with, and an exclusive queue holding one message.
async fn one_message_queue(prefix: &str) -> (Connection, Channel, String) {
    let conn = connect().await;
    let observer = conn.open_channel().await.unwrap();
    let queue = unique(prefix);
    observer.queue_declare(&queue, exclusive()).await.unwrap();
    observer.confirm_select().await.unwrap();
    publish_confirmed(&observer, "", &queue, BasicProperties::default(), "one").await;
    (conn, observer, queue)
}

#[tokio::test]
async fn five_thousand_dropped_channels_stay_under_channel_max() {
    let conn = connect().await;
    let channel_max = conn.tune().channel_max;
    assert!(
        channel_max > 0 && channel_max < 5_000,
        "the test needs a channel_max below its 5,000 cycles, got {channel_max}"
    );
    let mut highest = 0;
    for _ in 0..5_000 {
        let ch = conn.open_channel().await.expect("channel.open");
        highest = highest.max(ch.id().0);
        let other = ch.clone();
        drop(ch);
        drop(other);
    }
    assert!(
        highest < channel_max / 10,
        "channel numbers climbed to {highest} (channel_max {channel_max})"
    );
    let ch = conn
        .open_channel()
        .await
        .expect("channel.open after the cycles");
    ch.queue_declare(&unique("handles-after"), exclusive())
        .await
        .expect("the connection still works");
    conn.close().await.expect("close");
}

#[tokio::test]
async fn an_unsettled_delivery_keeps_its_channel_open_until_dropped() {
    let (conn, observer, queue) = one_message_queue("handles-delivery").await;
    let ch = conn.open_channel().await.unwrap();
    let id = ch.id();
    let mut consumer = ch.consume(&queue, Default::default()).await.unwrap();
    drop(ch);
    let delivery = next_delivery(&mut consumer).await;
    drop(consumer);
    // Only the delivery holds the channel now: its message stays unacknowledged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(message_count(&observer, &queue).await, 0);
    assert_ne!(conn.open_channel().await.unwrap().id(), id);

    drop(delivery);
    wait_freed(&conn, id).await;
    // The channel closed with the delivery unsettled: the broker requeued it.
    wait_ready(&observer, &queue, 1).await;
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_delivery_settles_after_its_channel_and_consumer_are_dropped() {
    let (conn, observer, queue) = one_message_queue("handles-ack").await;
    let ch = conn.open_channel().await.unwrap();
    let id = ch.id();
    let mut consumer = ch.consume(&queue, Default::default()).await.unwrap();
    let delivery = next_delivery(&mut consumer).await;
    drop((ch, consumer));
    delivery
        .ack()
        .await
        .expect("ack through the delivery's own handle");
    drop(delivery);
    wait_freed(&conn, id).await;
    // Acked before the channel closed: nothing comes back.
    assert_eq!(message_count(&observer, &queue).await, 0);
    conn.close().await.unwrap();
}
