//! The first-page API: `Consumer::recv`, `Channel::cancel` by `&str`, `QueueInfo::name()`
//! as `&str`, and the connection's events as a `Stream`.

use std::time::Duration;

use amqp_client::{BasicProperties, ConnectionConfig, ConnectionEvent, ConsumeOptions};
use amqp_tests::proxy::Proxy;
use amqp_tests::{config, connect, exclusive, publish_confirmed, unique};
use futures_util::StreamExt;

#[tokio::test]
async fn recv_reads_a_server_named_queue_until_cancel_by_str_ends_it() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = ch.queue_declare("", exclusive()).await.unwrap();
    let name: &str = queue.name();
    assert!(name.starts_with("amq.gen-"), "{name}");
    ch.confirm_select().await.unwrap();
    publish_confirmed(&ch, "", name, BasicProperties::default(), "one").await;

    let tag = unique("ergonomics");
    let options = ConsumeOptions {
        consumer_tag: tag.clone(),
        ..Default::default()
    };
    let mut consumer = ch.consume(name, options).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("the stream is open")
        .expect("a delivery");
    assert_eq!(&delivery.body[..], b"one");
    delivery.ack().await.unwrap();

    ch.cancel(tag.as_str()).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .expect("the stream ends within 10 s");
    assert!(end.is_none(), "{end:?}");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn the_event_stream_reports_a_recovery() {
    let proxy = Proxy::to_broker().await;
    let config = ConnectionConfig {
        endpoints: vec![proxy.endpoint()],
        connection_name: Some(unique("event-stream")),
        ..config()
    };
    let conn = amqp_client::Connection::connect_with(config).await.unwrap();
    let mut events = conn.event_stream();
    assert!(proxy.cut() > 0, "the proxy had no connection to cut");
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(ConnectionEvent::Recovered { .. })) {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event within 20 s")
            .expect("the stream is open")
            .expect("no events lost");
        assert!(
            !matches!(event, ConnectionEvent::Failed { .. }),
            "{event:?}"
        );
        seen.push(event);
    }
    assert!(
        matches!(seen.first(), Some(ConnectionEvent::Disconnected { .. })),
        "{seen:?}"
    );
    conn.close().await.unwrap();
}
