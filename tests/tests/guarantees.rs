//! Delivery guarantees on the paths off the happy one, against RabbitMQ: nothing handed back is
//! acked by mistake, each return resolves its own publish, a tag from a lost connection settles
//! nothing, and one unread consumer cannot stall another channel.

use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, Confirmation, ConnectionConfig, ConnectionEvent, ConsumeOptions, Error,
    ExchangeDeclareOptions, ExchangeKind, FieldTable, PublishOptions, QueueDeleteOptions,
};
use amqp_tests::proxy::Proxy;
use amqp_tests::{connect, exclusive, message_count, next_delivery, unique};
use bytes::Bytes;

/// A durable queue's options (RabbitMQ 4 refuses transient non-exclusive ones) that expire a
/// minute after their last use, so a crashed run leaves nothing behind for long.
fn durable_expiring() -> amqp_client::QueueDeclareOptions {
    amqp_client::QueueDeclareOptions {
        durable: true,
        arguments: [("x-expires", 60_000i32)].into_iter().collect(),
        ..Default::default()
    }
}

/// Publishes `count` small messages to `queue` without waiting for confirms.
async fn publish_unconfirmed(ch: &amqp_client::Channel, queue: &str, count: usize) {
    for _ in 0..count {
        let _unconfirmed = ch
            .publish(
                "",
                queue,
                PublishOptions::default(),
                BasicProperties::default(),
                "m",
            )
            .await
            .expect("publish");
    }
}

/// Polls until `queue` holds `want` messages, failing with what it holds after 10 s.
async fn wait_for_count(ch: &amqp_client::Channel, queue: &str, want: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = message_count(ch, queue).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} holds {got} messages, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handing_back_unread_deliveries_never_acks_them_whatever_their_headers() {
    let conn = connect().await;
    let ch = conn.open_channel().await.expect("channel");
    let queue = ch.queue_declare("", exclusive()).await.expect("queue").name;
    let queue = queue.to_str().expect("utf-8").to_owned();
    ch.confirm_select().await.expect("confirm.select");
    // Any publisher can set the header a stream puts on its deliveries.
    let headers: FieldTable = [("x-stream-offset", 42i64)].into_iter().collect();
    let properties = BasicProperties {
        headers: Some(headers),
        ..Default::default()
    };
    let body = Bytes::from(vec![b'x'; 70_000]);
    for _ in 0..200 {
        let outcome =
            amqp_tests::publish_confirmed(&ch, "", &queue, properties.clone(), body.clone()).await;
        assert_eq!(outcome, Confirmation::Ack);
    }
    let reader = conn.open_channel().await.expect("channel");
    let options = ConsumeOptions {
        buffer: Some(10),
        ..Default::default()
    };
    let mut consumer = reader.consume(&queue, options).await.expect("consume");
    for _ in 0..3 {
        next_delivery(&mut consumer).await.ack().await.expect("ack");
    }
    // The buffer holds unread deliveries: dropping the consumer hands them back.
    drop(consumer);
    wait_for_count(&ch, &queue, 197).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_resolves_the_publish_it_belongs_to_not_an_earlier_one_with_its_route() {
    let conn = connect().await;
    let ch = conn.open_channel().await.expect("channel");
    let exchange = unique("headers");
    let queue = unique("quorum");
    ch.exchange_declare(
        &exchange,
        ExchangeKind::Headers,
        ExchangeDeclareOptions::default(),
    )
    .await
    .expect("exchange");
    let arguments: FieldTable = [("x-queue-type", "quorum")].into_iter().collect();
    let options = amqp_client::QueueDeclareOptions {
        durable: true,
        arguments,
        ..Default::default()
    };
    ch.queue_declare(&queue, options)
        .await
        .expect("quorum queue");
    let binding: FieldTable = [("x-match", "all"), ("route", "yes")].into_iter().collect();
    ch.queue_bind(&queue, &exchange, "", binding)
        .await
        .expect("bind");
    ch.confirm_select().await.expect("confirm.select");
    let mandatory = PublishOptions { mandatory: true };
    let routed = BasicProperties {
        headers: Some([("route", "yes")].into_iter().collect()),
        ..Default::default()
    };
    // Up to 15 MiB: RabbitMQ 4 refuses messages over 16 MiB by default (3.x: 128 MiB).
    for size in [1 << 20, 8 << 20, 15 << 20] {
        // A: large, routed to the quorum queue (its ack is slow); B: small, unroutable.
        let a = ch
            .publish(&exchange, "k", mandatory, routed.clone(), vec![b'a'; size])
            .await
            .expect("publish A");
        let b = ch
            .publish(&exchange, "k", mandatory, BasicProperties::default(), "b")
            .await
            .expect("publish B");
        let (a, b) = (a.await.expect("A's outcome"), b.await.expect("B's outcome"));
        assert_eq!(a, Confirmation::Ack, "A ({size} octets) was routed");
        assert!(
            matches!(b, Confirmation::Returned(_)),
            "B was unroutable: {b:?}"
        );
    }
    ch.queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    ch.exchange_delete(&exchange, false)
        .await
        .expect("delete exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_kept_from_before_a_recovery_is_stale_not_a_new_delivery() {
    let proxy = Proxy::to_broker().await;
    let config = ConnectionConfig {
        endpoints: vec![proxy.endpoint()],
        ..amqp_tests::config()
    };
    let conn = amqp_client::Connection::connect_with(config)
        .await
        .expect("connect");
    let mut events = conn.events();
    let ch = conn.open_channel().await.expect("channel");
    let queue = unique("stale");
    let options = durable_expiring();
    ch.queue_declare(&queue, options).await.expect("queue");
    let mut consumer = ch
        .consume(&queue, ConsumeOptions::default())
        .await
        .expect("consume");
    let _unconfirmed = ch
        .publish(
            "",
            &queue,
            PublishOptions::default(),
            BasicProperties::default(),
            "m",
        )
        .await
        .expect("publish");
    let before = next_delivery(&mut consumer).await;
    assert!(proxy.cut() > 0, "a connection to cut");
    let recovered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(ConnectionEvent::Recovered { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(recovered.is_ok(), "no recovery within 20 s");
    let again = next_delivery(&mut consumer).await;
    assert!(again.redelivered, "the unacked message comes again");
    assert!(
        again.delivery_tag.0 > before.delivery_tag.0,
        "tags keep growing across recoveries: {} after {}",
        again.delivery_tag.0,
        before.delivery_tag.0
    );
    let stale = ch.ack(before.delivery_tag, false).await;
    assert!(matches!(stale, Err(Error::StaleDelivery(_))), "{stale:?}");
    ch.ack(again.delivery_tag, false)
        .await
        .expect("the new tag settles");
    wait_for_count(&ch, &queue, 0).await;
    ch.queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_consumer_does_not_delay_another_channels_confirms() {
    let conn = connect().await;
    let ch = conn.open_channel().await.expect("channel");
    let queue = ch.queue_declare("", exclusive()).await.expect("queue").name;
    let queue = queue.to_str().expect("utf-8").to_owned();
    publish_unconfirmed(&ch, &queue, 500).await;
    let slow = conn.open_channel().await.expect("channel");
    let options = ConsumeOptions {
        buffer: Some(5),
        ..Default::default()
    };
    let unread = slow.consume(&queue, options).await.expect("consume");
    let publisher = conn.open_channel().await.expect("channel");
    publisher.confirm_select().await.expect("confirm.select");
    let other = unique("other");
    let options = durable_expiring();
    publisher
        .queue_declare(&other, options)
        .await
        .expect("queue");
    for _ in 0..100 {
        let confirm = publisher
            .publish(
                "",
                &other,
                PublishOptions::default(),
                BasicProperties::default(),
                "c",
            )
            .await
            .expect("publish");
        let outcome = tokio::time::timeout(Duration::from_secs(10), confirm)
            .await
            .expect("a confirm while another consumer is unread");
        assert_eq!(outcome.expect("confirm"), Confirmation::Ack);
    }
    drop(unread);
    publisher
        .queue_delete(&other, QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_nobody_listens_to_are_counted() {
    let conn = connect().await;
    let ch = conn.open_channel().await.expect("channel");
    let before = conn.unhandled_returns();
    let mandatory = PublishOptions { mandatory: true };
    let _unconfirmed = ch
        .publish(
            "",
            &unique("nowhere"),
            mandatory,
            BasicProperties::default(),
            "lost",
        )
        .await
        .expect("publish");
    // A round trip: the broker sends the return before it answers a later method.
    ch.qos(0, false).await.expect("qos");
    assert_eq!(conn.unhandled_returns(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_everything_published_before_it() {
    let queue = unique("close-order");
    let options = durable_expiring();
    let conn = connect().await;
    let ch = conn.open_channel().await.expect("channel");
    ch.queue_declare(&queue, options).await.expect("queue");
    publish_unconfirmed(&ch, &queue, 1000).await;
    // Right away: the close must not overtake the publishes still queued before it.
    conn.close().await.expect("close");
    let check = connect().await;
    let ch = check.open_channel().await.expect("channel");
    wait_for_count(&ch, &queue, 1000).await;
    ch.queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .expect("delete");
}
