//! The client's core paths against the real broker: declare, publish with confirms, consume,
//! get, ack, and errors with their reply codes.

use std::time::Duration;

use amqp_client::{
    BasicProperties, Confirmation, ConsumeOptions, Error, PublishOptions, QueueDeclareOptions,
    ReplyCode,
};
use amqp_tests::{connect, message_count, passive, unique};
use futures_util::StreamExt;

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn publish_with_confirms_then_consume_and_ack() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("basics");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let mut confirms = Vec::new();
    for i in 0..1000u32 {
        let c = ch
            .publish(
                "",
                &queue,
                PublishOptions::default(),
                BasicProperties::default(),
                i.to_be_bytes().to_vec(),
            )
            .await
            .unwrap();
        confirms.push(c);
    }
    for c in confirms {
        assert_eq!(c.await.unwrap(), Confirmation::Ack);
    }
    ch.qos(100, false).await.unwrap();
    let mut consumer = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    for i in 0..1000u32 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&d.body[..], &i.to_be_bytes());
        d.ack().await.unwrap();
        assert!(d.ack().await.is_err(), "a second ack is refused locally");
    }
    consumer.cancel().await.unwrap();
    assert!(
        consumer.next().await.is_none(),
        "the stream ends after cancel"
    );
    assert_eq!(message_count(&ch, &queue).await, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn mandatory_unroutable_publish_is_returned_with_its_confirm() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let c = ch
        .publish(
            "amq.direct",
            &unique("nowhere"),
            PublishOptions { mandatory: true },
            BasicProperties::default(),
            "lost",
        )
        .await
        .unwrap();
    match c.await.unwrap() {
        Confirmation::Returned(r) => {
            assert_eq!(r.reply_code, ReplyCode::NO_ROUTE);
            assert_eq!(&r.body[..], b"lost");
        }
        other => panic!("expected a return, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_queue_is_404_and_ends_only_the_channel() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let err = ch
        .queue_declare(&unique("missing"), passive())
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(ReplyCode::NOT_FOUND), "{err}");
    assert!(matches!(err, Error::ChannelClosed(_)));
    // Later calls on the channel fail with the same error; the connection lives on.
    let again = ch
        .queue_declare(&unique("x"), exclusive())
        .await
        .unwrap_err();
    assert_eq!(again.reply_code(), Some(ReplyCode::NOT_FOUND));
    let other = conn.open_channel().await.unwrap();
    other
        .queue_declare(&unique("fine"), exclusive())
        .await
        .unwrap();
}

#[tokio::test]
async fn get_and_get_empty() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("get");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    assert!(ch.get(&queue, false).await.unwrap().is_none());
    ch.confirm_select().await.unwrap();
    ch.publish(
        "",
        &queue,
        PublishOptions::default(),
        BasicProperties::default(),
        "one",
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let got = ch.get(&queue, false).await.unwrap().expect("a message");
    assert_eq!(&got.delivery.body[..], b"one");
    assert_eq!(got.message_count, 0);
    got.delivery.ack().await.unwrap();
}
