//! Publish-subscribe against the real broker.

mod common;

use std::time::Duration;

use amqp_client::{BasicProperties, Connection, PublishOptions, ShortStr};
use common::{connect, prefix, within};
use futures_util::StreamExt;
use messaging_patterns::codec::Json;
use messaging_patterns::pubsub::{
    ExchangeType, PubSubError, Publisher, SubscribeOptions, Subscription,
};
use tokio::sync::mpsc;

type Sub = Subscription<Json<String>>;

async fn subscribe(
    conn: &Connection,
    p: &str,
    kind: ExchangeType,
    patterns: &[&str],
    durable: Option<&str>,
) -> Sub {
    let options = SubscribeOptions {
        prefix: p.to_owned(),
        durable_queue: durable.map(str::to_owned),
        ..Default::default()
    };
    Subscription::subscribe(conn, "events", kind, patterns, Json::new(), options)
        .await
        .unwrap()
}

async fn next(sub: &mut Sub) -> (String, String) {
    let message = within(5, "a message", sub.next()).await.unwrap().unwrap();
    message.ack().await.unwrap();
    (message.routing_key.clone(), message.payload.clone())
}

async fn delete_exchange(conn: &Connection, name: &str) {
    let channel = conn.open_channel().await.unwrap();
    channel.exchange_delete(name, false).await.unwrap();
    channel.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fanout_subscriber_gets_every_message() {
    let conn = connect().await;
    let p = prefix("fanout");
    let mut a = subscribe(&conn, &p, ExchangeType::Fanout, &[], None).await;
    let mut b = subscribe(&conn, &p, ExchangeType::Fanout, &[], None).await;
    let publisher = Publisher::declare(&conn, "events", ExchangeType::Fanout, Json::new(), &p)
        .await
        .unwrap();
    for text in ["one", "two"] {
        publisher
            .publish("ignored", &text.to_owned())
            .await
            .unwrap();
    }
    for sub in [&mut a, &mut b] {
        assert_eq!(next(sub).await.1, "one");
        assert_eq!(next(sub).await.1, "two");
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    delete_exchange(&conn, publisher.exchange()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_subscribers_get_only_matching_keys() {
    let conn = connect().await;
    let p = prefix("topic");
    let mut nyse = subscribe(&conn, &p, ExchangeType::Topic, &["stock.*.nyse"], None).await;
    let mut all = subscribe(&conn, &p, ExchangeType::Topic, &["stock.#", "fx.#"], None).await;
    let publisher = Publisher::declare(&conn, "events", ExchangeType::Topic, Json::new(), &p)
        .await
        .unwrap();
    for key in ["stock.ibm.nasdaq", "stock.ibm.nyse", "fx.eur"] {
        publisher.publish(key, &key.to_owned()).await.unwrap();
    }
    assert_eq!(next(&mut nyse).await.0, "stock.ibm.nyse");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), nyse.next())
            .await
            .is_err(),
        "nothing else matches stock.*.nyse"
    );
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(next(&mut all).await.0);
    }
    assert_eq!(keys, ["stock.ibm.nasdaq", "stock.ibm.nyse", "fx.eur"]);
    nyse.close().await.unwrap();
    all.close().await.unwrap();
    delete_exchange(&conn, publisher.exchange()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscriber_misses_nothing_while_down() {
    let conn = connect().await;
    let p = prefix("durable");
    let sub = subscribe(&conn, &p, ExchangeType::Fanout, &[], Some("audit")).await;
    assert_eq!(sub.queue(), format!("{p}audit"));
    sub.close().await.unwrap();
    let publisher = Publisher::declare(&conn, "events", ExchangeType::Fanout, Json::new(), &p)
        .await
        .unwrap();
    for text in ["while", "down"] {
        publisher.publish("", &text.to_owned()).await.unwrap();
    }
    let mut sub = subscribe(&conn, &p, ExchangeType::Fanout, &[], Some("audit")).await;
    assert_eq!(next(&mut sub).await.1, "while");
    assert_eq!(next(&mut sub).await.1, "down");
    sub.unsubscribe().await.unwrap();
    delete_exchange(&conn, publisher.exchange()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_ack_and_unreadable_messages_are_rejected() {
    let conn = connect().await;
    let p = prefix("handler");
    let sub_conn = connect().await;
    let sub = subscribe(&sub_conn, &p, ExchangeType::Fanout, &[], Some("h")).await;
    let queue = sub.queue().to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = sub.handle(move |message| {
        let tx = tx.clone();
        async move {
            tx.send(message.payload.clone()).unwrap();
            if message.payload == "fail" {
                Err("refused")
            } else {
                Ok(())
            }
        }
    });
    let publisher = Publisher::declare(&conn, "events", ExchangeType::Fanout, Json::new(), &p)
        .await
        .unwrap();
    publisher.publish("", &"fail".to_owned()).await.unwrap();
    let channel = conn.open_channel().await.unwrap();
    let xml = BasicProperties {
        content_type: Some(ShortStr::from_static("text/xml")),
        ..Default::default()
    };
    let confirm = channel
        .publish(
            publisher.exchange(),
            "",
            PublishOptions::default(),
            xml,
            "<x/>",
        )
        .await
        .unwrap();
    drop(confirm);
    publisher.publish("", &"fine".to_owned()).await.unwrap();
    assert_eq!(within(5, "fail", rx.recv()).await.unwrap(), "fail");
    assert_eq!(within(5, "fine", rx.recv()).await.unwrap(), "fine");
    assert!(
        rx.try_recv().is_err(),
        "the unreadable message never reached the handler"
    );
    // Everything was settled: once the subscriber's connection is gone, nothing comes back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sub_conn.close().await.unwrap();
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(common::depth(&conn, &queue).await, 0);
    channel
        .queue_delete(&queue, Default::default())
        .await
        .unwrap();
    channel.close().await.unwrap();
    delete_exchange(&conn, publisher.exchange()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reports_an_unreadable_message_and_goes_on() {
    let conn = connect().await;
    let p = prefix("unreadable");
    let mut sub = subscribe(&conn, &p, ExchangeType::Fanout, &[], None).await;
    let channel = conn.open_channel().await.unwrap();
    let exchange = format!("{p}events");
    let confirm = channel
        .publish(
            &exchange,
            "",
            PublishOptions::default(),
            BasicProperties::default(),
            "not json",
        )
        .await
        .unwrap();
    drop(confirm);
    let publisher = Publisher::declare(&conn, "events", ExchangeType::Fanout, Json::new(), &p)
        .await
        .unwrap();
    publisher.publish("", &"after".to_owned()).await.unwrap();
    let first = within(5, "the error", sub.next()).await.unwrap();
    assert!(matches!(first, Err(PubSubError::Codec(_))), "{first:?}");
    assert_eq!(next(&mut sub).await.1, "after");
    sub.close().await.unwrap();
    channel.close().await.unwrap();
    delete_exchange(&conn, &exchange).await;
}
