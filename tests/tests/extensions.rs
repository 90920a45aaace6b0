//! RabbitMQ's extensions to 0-9-1 through the client: mandatory returns (with and without
//! confirms), publisher nacks, the broker cancelling a consumer, and direct reply-to.

use std::time::Duration;

use amqp_client::{
    BasicProperties, Confirmation, ConsumeOptions, Error, FieldTable, PublishOptions,
    QueueDeclareOptions, ReplyCode,
};
use amqp_tests::{connect, exclusive, next_delivery, unique};
use amqp_wire::ShortStr;
use futures_util::StreamExt;

#[tokio::test]
async fn mandatory_returns_come_on_the_returns_stream_outside_confirm_mode() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let mut returns = ch.returns(8).await.unwrap();
    let key = unique("unroutable");
    let props = BasicProperties {
        message_id: Some(ShortStr::from_static("r-1")),
        ..Default::default()
    };
    let c = ch
        .publish(
            "amq.direct",
            &key,
            PublishOptions { mandatory: true },
            props.clone(),
            "back",
        )
        .await
        .unwrap();
    assert_eq!(c.await.unwrap(), Confirmation::NotRequested);
    // Not mandatory: dropped in silence.
    let sent = ch
        .publish(
            "amq.direct",
            &key,
            PublishOptions::default(),
            props.clone(),
            "gone",
        )
        .await
        .unwrap();
    assert_eq!(sent.await.unwrap(), Confirmation::NotRequested);
    let returned = tokio::time::timeout(Duration::from_secs(10), returns.next())
        .await
        .expect("a return within 10 s")
        .expect("the returns stream is open");
    assert_eq!(returned.reply_code, ReplyCode::NO_ROUTE);
    assert_eq!(returned.reply_text, "NO_ROUTE");
    assert_eq!(returned.exchange, "amq.direct");
    assert_eq!(returned.routing_key, key.as_str());
    assert_eq!(returned.properties, props);
    assert_eq!(&returned.body[..], b"back");
    // Only the mandatory one came back.
    ch.queue_declare(&unique("sync"), exclusive())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), returns.next())
            .await
            .is_err()
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn mandatory_returns_in_confirm_mode_resolve_their_confirm() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("routable");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let key = unique("unroutable");
    // Interleaved routable and unroutable publishes: each confirm gets its own outcome.
    let mut confirms = Vec::new();
    for i in 0..10 {
        let routing_key = if i % 2 == 0 {
            queue.as_str()
        } else {
            key.as_str()
        };
        confirms.push(
            ch.publish(
                "",
                routing_key,
                PublishOptions { mandatory: true },
                BasicProperties::default(),
                format!("m{i}"),
            )
            .await
            .unwrap(),
        );
    }
    for (i, c) in confirms.into_iter().enumerate() {
        match (i % 2, c.await.unwrap()) {
            (0, Confirmation::Ack) => {}
            (1, Confirmation::Returned(r)) => {
                assert_eq!(r.reply_code, ReplyCode::NO_ROUTE);
                assert_eq!(r.routing_key, key.as_str());
                assert_eq!(r.body, format!("m{i}").into_bytes());
            }
            (_, other) => panic!("publish {i}: {other:?}"),
        }
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_full_reject_publish_queue_nacks() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("full");
    let mut args = FieldTable::new();
    args.insert("x-max-length", 1i32);
    args.insert("x-overflow", "reject-publish");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            exclusive: true,
            arguments: args,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ch.confirm_select().await.unwrap();
    let mut confirms = Vec::new();
    for i in 0..3 {
        confirms.push(
            ch.publish(
                "",
                &queue,
                PublishOptions::default(),
                BasicProperties::default(),
                format!("m{i}"),
            )
            .await
            .unwrap(),
        );
    }
    let outcomes: Vec<_> = futures_util::future::join_all(confirms)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        outcomes,
        [Confirmation::Ack, Confirmation::Nack, Confirmation::Nack]
    );
    // A nack is not an error: the channel carries on, and the queue holds the first.
    let got = ch
        .get(&queue, true)
        .await
        .unwrap()
        .expect("the accepted one");
    assert_eq!(&got.delivery.body[..], b"m0");
    // Room again: accepted.
    let c = ch
        .publish(
            "",
            &queue,
            PublishOptions::default(),
            BasicProperties::default(),
            "m3",
        )
        .await
        .unwrap();
    assert_eq!(c.await.unwrap(), Confirmation::Ack);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn deleting_the_queue_cancels_its_consumer() {
    let conn = connect().await;
    let consuming = conn.open_channel().await.unwrap();
    let deleting = conn.open_channel().await.unwrap();
    let queue = unique("cancelled");
    consuming.queue_declare(&queue, exclusive()).await.unwrap();
    consuming.confirm_select().await.unwrap();
    consuming
        .publish(
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
    let mut consumer = consuming
        .consume(&queue, ConsumeOptions::default())
        .await
        .unwrap();
    let d = next_delivery(&mut consumer).await;
    d.ack().await.unwrap();
    deleting
        .queue_delete(&queue, Default::default())
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the cancel within 10 s");
    match item {
        Some(Err(Error::ConsumerCancelled(tag))) => assert_eq!(tag, consumer.tag().to_string()),
        other => panic!("expected ConsumerCancelled, got {other:?}"),
    }
    assert!(
        consumer.next().await.is_none(),
        "the stream ends after the cancel"
    );
    // The channel is fine (no cancel-ok was sent for the broker's nowait cancel).
    consuming
        .queue_declare(&unique("after"), exclusive())
        .await
        .unwrap();
    assert!(!consuming.is_closed());
    drop(consumer);
    conn.close().await.unwrap();
}

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

#[tokio::test]
async fn direct_reply_to_round_trip() {
    // The responder: its own connection, consuming a request queue.
    let server = connect().await;
    let server_ch = server.open_channel().await.unwrap();
    let requests = unique("rpc");
    server_ch
        .queue_declare(&requests, exclusive())
        .await
        .unwrap();
    let mut incoming = server_ch
        .consume(&requests, ConsumeOptions::default())
        .await
        .unwrap();
    let responder = tokio::spawn(async move {
        let request = next_delivery(&mut incoming).await;
        let reply_to = request.properties.reply_to.clone().expect("a reply_to");
        let reply_to = reply_to.to_str().unwrap().to_owned();
        assert!(
            reply_to.starts_with("amq.rabbitmq.reply-to."),
            "the broker rewrites reply_to: {reply_to}"
        );
        let props = BasicProperties {
            correlation_id: request.properties.correlation_id.clone(),
            ..Default::default()
        };
        let mut body = b"re: ".to_vec();
        body.extend_from_slice(&request.body);
        // Not mandatory: on 3.x a direct reply is not counted as routed.
        let sent = server_ch
            .publish("", &reply_to, PublishOptions::default(), props, body)
            .await
            .unwrap();
        assert_eq!(sent.await.unwrap(), Confirmation::NotRequested);
        request.ack().await.unwrap();
        (server_ch, incoming)
    });

    // The requester: consume the pseudo-queue with no-ack, then publish on the same channel.
    let client = connect().await;
    let ch = client.open_channel().await.unwrap();
    let mut replies = ch
        .consume(
            REPLY_TO,
            ConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let props = BasicProperties {
        reply_to: Some(ShortStr::from_static(REPLY_TO)),
        correlation_id: Some(ShortStr::from_static("call-1")),
        ..Default::default()
    };
    let sent = ch
        .publish("", &requests, PublishOptions::default(), props, "ping")
        .await
        .unwrap();
    assert_eq!(sent.await.unwrap(), Confirmation::NotRequested);
    let reply = next_delivery(&mut replies).await;
    assert_eq!(&reply.body[..], b"re: ping");
    assert_eq!(
        reply
            .properties
            .correlation_id
            .as_ref()
            .map(|c| c.to_str().unwrap()),
        Some("call-1")
    );
    // A no-ack delivery has nothing to settle.
    assert!(matches!(reply.ack().await, Err(Error::Usage(_))));
    let (_server_ch, _incoming) = tokio::time::timeout(Duration::from_secs(10), responder)
        .await
        .unwrap()
        .unwrap();
    replies.cancel().await.unwrap();
    client.close().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test]
async fn reply_to_without_the_reply_consumer_is_406() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("rpc-406");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let props = BasicProperties {
        reply_to: Some(ShortStr::from_static(REPLY_TO)),
        ..Default::default()
    };
    let confirm = ch
        .publish("", &queue, PublishOptions::default(), props, "ping")
        .await
        .unwrap();
    let err = confirm.await.unwrap_err();
    assert_eq!(
        err.reply_code(),
        Some(ReplyCode::PRECONDITION_FAILED),
        "{err}"
    );
    assert!(matches!(err, Error::ChannelClosed(_)));
    // Consuming the pseudo-queue with acks is refused too.
    let ch = conn.open_channel().await.unwrap();
    let err = ch
        .consume(REPLY_TO, ConsumeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.reply_code(),
        Some(ReplyCode::PRECONDITION_FAILED),
        "{err}"
    );
    conn.close().await.unwrap();
}
