//! A stream consumer survives a connection loss without reading the stream again: the
//! recovery re-registers it from the offset after the last delivery it handed to the
//! application (tracked from each delivery's `x-stream-offset` header), not from its original
//! `x-stream-offset` argument. Runs against the shared broker through a proxy that cuts the
//! connection; the stream is durable and deleted at the end (`x-max-age` bounds a leftover).

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use amqp_client::{
    BasicProperties, Confirmation, Connection, ConnectionConfig, ConnectionEvent, ConsumeOptions,
    FieldValue, PublishOptions, QueueDeclareOptions, QueueDeleteOptions, Recovery,
};
use amqp_tests::proxy::Proxy;
use amqp_tests::{config, unique};
use futures_util::{FutureExt, StreamExt};

const MESSAGES: i64 = 100;

#[tokio::test]
async fn a_recovered_stream_consumer_continues_after_its_last_offset() {
    amqp_tests::init_logging();
    let stream = unique("stream-resume");
    let direct = Connection::connect_with(config())
        .await
        .expect("a broker at AMQP_URL (scripts/ensure-rabbitmq starts one)");
    let setup = direct.open_channel().await.expect("channel");
    setup
        .queue_declare(
            &stream,
            QueueDeclareOptions {
                durable: true,
                arguments: [
                    ("x-queue-type", FieldValue::from("stream")),
                    ("x-max-age", FieldValue::from("10m")),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            },
        )
        .await
        .expect("declare a stream");
    setup.confirm_select().await.expect("confirm.select");
    for i in 0..MESSAGES {
        let confirm = setup
            .publish(
                "",
                &stream,
                PublishOptions::default(),
                BasicProperties::default(),
                i.to_be_bytes().to_vec(),
            )
            .await
            .expect("publish");
        assert_eq!(confirm.await.expect("confirm"), Confirmation::Ack);
    }

    // The stream is deleted also when the checks fail.
    let checks = AssertUnwindSafe(async {
        let proxy = Proxy::to_broker().await;
        let conn = Connection::connect_with(ConnectionConfig {
            endpoints: vec![proxy.endpoint()],
            connection_name: Some(unique("stream-resume-consumer")),
            recovery: Recovery {
                max_backoff: Duration::from_millis(200),
                ..Recovery::default()
            },
            ..config()
        })
        .await
        .expect("connect through the proxy");
        let mut events = conn.events();
        let ch = conn.open_channel().await.expect("channel");
        ch.qos(10, false).await.expect("qos");
        let mut consumer = ch
            .consume(
                &stream,
                ConsumeOptions {
                    arguments: [("x-stream-offset", FieldValue::from("first"))]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
            )
            .await
            .expect("consume the stream");

        let mut offsets = Vec::new();
        let mut cut = false;
        while offsets.len() < MESSAGES as usize {
            let delivery = tokio::time::timeout(Duration::from_secs(15), consumer.next())
                .await
                .unwrap_or_else(|_| panic!("no delivery after offsets {offsets:?}"))
                .expect("consumer open")
                .expect("delivery");
            let offset = match delivery
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("x-stream-offset"))
            {
                Some(FieldValue::I64(o)) => *o,
                other => panic!("x-stream-offset header: {other:?}"),
            };
            let body = i64::from_be_bytes(delivery.body[..8].try_into().expect("8 octets"));
            assert_eq!(body, offset, "message {body} at offset {offset}");
            offsets.push(offset);
            // Stale after the cut: a stream keeps its messages, nothing to redo.
            let _ = delivery.ack().await;
            if offsets.len() == 30 && !cut {
                cut = true;
                assert!(proxy.cut() > 0, "a connection to cut");
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), events.recv())
                        .await
                        .expect("recovered within 30 s")
                        .expect("events")
                    {
                        ConnectionEvent::Recovered { .. } => break,
                        ConnectionEvent::Failed { error } => panic!("recovery failed: {error}"),
                        _ => {}
                    }
                }
            }
        }
        let expected: Vec<i64> = (0..MESSAGES).collect();
        assert_eq!(
            offsets, expected,
            "every offset once, in order, across the recovery"
        );
        // Nothing more: the re-registered consumer did not start from "first" again.
        let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
        assert!(extra.is_err(), "unexpected delivery: {extra:?}");
        let _ = conn.close().await;
    })
    .catch_unwind()
    .await;
    setup
        .queue_delete(&stream, QueueDeleteOptions::default())
        .await
        .expect("delete the stream");
    let _ = direct.close().await;
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
}
