//! Automatic recovery against the real broker: the broker closes our connection (by its
//! user-provided name, so no other connection is touched) and the client restores channels,
//! a server-named queue, its binding and its consumer, whose stream carries on.

use std::time::Duration;

use amqp_client::{
    BasicProperties, Confirmation, Connection, ConnectionConfig, ConnectionEvent, Error,
    ExchangeDeclareOptions, ExchangeKind, PublishOptions, QueueDeclareOptions,
};
use amqp_tests::{amqp_url, unique};
use futures_util::StreamExt;

/// Closes the broker-side connection whose client gave `name`, with `RABBITMQCTL`.
fn close_connection_named(name: &str) {
    let closed = amqp_tests::rabbitmqctl::close_connections_named(name, "recovery test");
    assert_eq!(
        closed, 1,
        "connections named {name} on the node RABBITMQCTL drives (it must be AMQP_URL's)"
    );
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("an event within 20 s")
        .expect("events open")
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_recovers_its_topology_and_consumers() {
    amqp_tests::init_logging();
    let name = unique("recovery");
    let mut config = ConnectionConfig::from_uri(&amqp_url()).expect("AMQP_URL");
    config.connection_name = Some(name.clone());
    let conn = Connection::connect_with(config)
        .await
        .expect("connect (run scripts/ensure-rabbitmq)");
    let mut events = conn.events();
    let ch = conn.open_channel().await.unwrap();
    let exchange = unique("recovery-ex");
    ch.exchange_declare(
        &exchange,
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let queue = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .name;
    ch.queue_bind(queue.to_str().unwrap(), &exchange, "k", Default::default())
        .await
        .unwrap();
    ch.qos(10, false).await.unwrap();
    ch.confirm_select().await.unwrap();
    let mut consumer = ch
        .consume(queue.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let publish = |body: &'static str| {
        let ch = ch.clone();
        let exchange = exchange.clone();
        async move {
            ch.publish(
                &exchange,
                "k",
                PublishOptions::default(),
                BasicProperties::default(),
                body,
            )
            .await
        }
    };
    assert_eq!(
        publish("before").await.unwrap().await.unwrap(),
        Confirmation::Ack
    );
    let first = consumer.next().await.unwrap().unwrap();
    assert_eq!(&first.body[..], b"before");

    close_connection_named(&name);
    let mut renamed = None;
    loop {
        match next_event(&mut events).await {
            ConnectionEvent::Recovered { .. } => break,
            ConnectionEvent::QueueRenamed { old, new } => {
                assert_eq!(old, queue);
                renamed = Some(new);
            }
            ConnectionEvent::Failed { error } => panic!("recovery failed: {error}"),
            _ => {}
        }
    }
    assert!(
        renamed.is_some(),
        "the server-named exclusive queue is declared again under a new name"
    );
    // The delivery from before cannot be acked on the new connection.
    assert!(matches!(first.ack().await, Err(Error::StaleDelivery(_))));

    // Same channel handle, same consumer stream; the binding followed the new queue name.
    assert_eq!(
        publish("after").await.unwrap().await.unwrap(),
        Confirmation::Ack
    );
    let next = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&next.body[..], b"after");
    next.ack().await.unwrap();
    conn.close().await.unwrap();
}
