//! Every channel method of the client against the real broker: exchanges, queues, bindings,
//! qos, publish, consume, get, cancel, recover, the three ways to settle a delivery (with
//! `multiple` and `requeue`, and the `redelivered` flag that follows), confirm mode,
//! transactions and `channel.flow`.

use std::time::Duration;

use amqp_client::{
    BasicProperties, Confirmation, ConsumeOptions, Error, ExchangeDeclareOptions, ExchangeKind,
    FieldTable, PublishOptions, QueueDeleteOptions, ReplyCode, UsageError,
};
use amqp_tests::{
    connect, exclusive, message_count, next_delivery, passive, publish_confirmed, unique,
};
use futures_util::StreamExt;

fn text(body: &[u8]) -> &str {
    std::str::from_utf8(body).expect("utf-8 body")
}

#[tokio::test]
async fn exchange_declare_passive_and_delete() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let name = unique("ex");
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let name = format!("{name}.{}", kind.as_str());
        ch.exchange_declare(&name, kind.clone(), ExchangeDeclareOptions::default())
            .await
            .unwrap();
        // Declaring it again the same way is a no-op; a passive declare finds it.
        ch.exchange_declare(&name, kind.clone(), ExchangeDeclareOptions::default())
            .await
            .unwrap();
        ch.exchange_declare(
            &name,
            kind,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        ch.exchange_delete(&name, false).await.unwrap();
    }
    // Deleting a missing exchange succeeds on RabbitMQ.
    ch.exchange_delete(&name, false).await.unwrap();
    // A passive declare of the deleted exchange is 404.
    let err = ch
        .exchange_declare(
            &format!("{name}.direct"),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(ReplyCode::NOT_FOUND), "{err}");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn exchange_delete_if_unused_refuses_an_exchange_with_bindings() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let exchange = unique("ex-unused");
    ch.exchange_declare(&exchange, ExchangeKind::Fanout, Default::default())
        .await
        .unwrap();
    let queue = ch.queue_declare("", exclusive()).await.unwrap().name;
    let queue = queue.to_str().unwrap().to_owned();
    ch.queue_bind(&queue, &exchange, "", FieldTable::new())
        .await
        .unwrap();
    let err = ch.exchange_delete(&exchange, true).await.unwrap_err();
    assert_eq!(err.reply_code(), Some(ReplyCode::PRECONDITION_FAILED));
    let ch = conn.open_channel().await.unwrap();
    ch.exchange_delete(&exchange, false).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn queue_declare_bind_unbind_purge_delete() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    // A server-named queue.
    let info = ch.queue_declare("", exclusive()).await.unwrap();
    assert!(
        info.name.to_str().unwrap().starts_with("amq.gen-"),
        "{info:?}"
    );
    assert_eq!((info.message_count, info.consumer_count), (0, 0));

    let queue = unique("q");
    let info = ch.queue_declare(&queue, exclusive()).await.unwrap();
    assert_eq!(info.name, queue.as_str());
    let key = unique("key");
    ch.queue_bind(&queue, "amq.direct", &key, FieldTable::new())
        .await
        .unwrap();
    // Publishes through a channel in confirm mode, so the counts below are settled.
    let pubch = conn.open_channel().await.unwrap();
    pubch.confirm_select().await.unwrap();
    for i in 0..3 {
        let c = publish_confirmed(
            &pubch,
            "amq.direct",
            &key,
            BasicProperties::default(),
            format!("m{i}"),
        )
        .await;
        assert_eq!(c, Confirmation::Ack);
    }
    let info = ch.queue_declare(&queue, exclusive()).await.unwrap();
    assert_eq!(info.message_count, 3);
    assert_eq!(ch.queue_purge(&queue).await.unwrap(), 3);
    assert_eq!(message_count(&ch, &queue).await, 0);

    // Unbound, the routing key reaches no queue: the mandatory message comes back.
    let mut returns = ch.returns(16).await.unwrap();
    ch.queue_unbind(&queue, "amq.direct", &key, FieldTable::new())
        .await
        .unwrap();
    let sent = ch
        .publish(
            "amq.direct",
            &key,
            PublishOptions { mandatory: true },
            BasicProperties::default(),
            "after unbind",
        )
        .await
        .unwrap();
    assert_eq!(sent.await.unwrap(), Confirmation::NotRequested);
    let returned = tokio::time::timeout(Duration::from_secs(10), returns.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(returned.reply_code, ReplyCode::NO_ROUTE);
    assert_eq!(&returned.body[..], b"after unbind");

    // Delete with if_empty refuses a queue with messages; plain delete counts them.
    for body in ["x", "y"] {
        publish_confirmed(&pubch, "", &queue, BasicProperties::default(), body).await;
    }
    let err = ch
        .queue_delete(
            &queue,
            QueueDeleteOptions {
                if_empty: true,
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
    let ch = conn.open_channel().await.unwrap();
    assert_eq!(
        ch.queue_delete(&queue, QueueDeleteOptions::default())
            .await
            .unwrap(),
        2
    );
    let err = ch.queue_declare(&queue, passive()).await.unwrap_err();
    assert_eq!(err.reply_code(), Some(ReplyCode::NOT_FOUND));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn exchange_to_exchange_bindings_route_and_unbind() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let source = unique("e2e-src");
    let destination = unique("e2e-dst");
    ch.exchange_declare(&source, ExchangeKind::Direct, Default::default())
        .await
        .unwrap();
    ch.exchange_declare(&destination, ExchangeKind::Topic, Default::default())
        .await
        .unwrap();
    let queue = unique("e2e-q");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.queue_bind(&queue, &destination, "orders.*", FieldTable::new())
        .await
        .unwrap();
    ch.exchange_bind(&destination, &source, "orders.new", FieldTable::new())
        .await
        .unwrap();
    ch.confirm_select().await.unwrap();

    // Through both exchanges: source (direct, key orders.new) -> destination (topic orders.*).
    let publish = |key: &'static str, body: &'static str| {
        let ch = ch.clone();
        let source = source.clone();
        async move {
            ch.publish(
                &source,
                key,
                PublishOptions { mandatory: true },
                BasicProperties::default(),
                body,
            )
            .await
            .unwrap()
            .await
            .unwrap()
        }
    };
    assert_eq!(publish("orders.new", "routed").await, Confirmation::Ack);
    // The source's binding does not match: returned.
    assert!(matches!(
        publish("orders.old", "unrouted").await,
        Confirmation::Returned(_)
    ));
    let got = ch.get(&queue, true).await.unwrap().expect("routed message");
    assert_eq!(&got.delivery.body[..], b"routed");
    assert_eq!(got.delivery.exchange, source.as_str());
    assert_eq!(got.delivery.routing_key, "orders.new");
    assert!(ch.get(&queue, true).await.unwrap().is_none());

    ch.exchange_unbind(&destination, &source, "orders.new", FieldTable::new())
        .await
        .unwrap();
    assert!(matches!(
        publish("orders.new", "after unbind").await,
        Confirmation::Returned(_)
    ));
    ch.exchange_delete(&source, false).await.unwrap();
    ch.exchange_delete(&destination, false).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn consume_get_and_cancel() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("consume");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for i in 0..4 {
        let c =
            publish_confirmed(&ch, "", &queue, BasicProperties::default(), format!("m{i}")).await;
        assert_eq!(c, Confirmation::Ack);
    }
    // basic.get takes the first message, leaving 3.
    let got = ch.get(&queue, false).await.unwrap().expect("a message");
    assert_eq!(text(&got.delivery.body), "m0");
    assert_eq!(got.message_count, 3);
    assert!(got.delivery.consumer_tag.is_empty());
    got.delivery.ack().await.unwrap();

    // A consumer with a tag of our choosing gets the rest, in order.
    let tag = unique("ctag");
    let mut consumer = ch
        .consume(
            &queue,
            ConsumeOptions {
                consumer_tag: tag.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(consumer.tag(), tag.as_str());
    for i in 1..4 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.body), format!("m{i}"));
        assert_eq!(d.consumer_tag, tag.as_str());
        assert_eq!(d.routing_key, queue.as_str());
        assert!(!d.redelivered);
        d.ack().await.unwrap();
    }
    // The same tag again on this channel is refused locally (the broker would close the
    // connection with 530).
    let err = ch
        .consume(
            &queue,
            ConsumeOptions {
                consumer_tag: tag.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::ConsumerTagInUse(_))),
        "{err:?}"
    );
    // Channel::cancel by tag ends the stream.
    ch.cancel(tag.as_bytes()).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    // Nothing is consumed after the cancel.
    publish_confirmed(&ch, "", &queue, BasicProperties::default(), "left").await;
    let info = ch.queue_declare(&queue, passive()).await.unwrap();
    assert_eq!((info.message_count, info.consumer_count), (1, 0));

    // A broker-named consumer, cancelled through the Consumer handle.
    let mut consumer = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    assert!(consumer.tag().to_str().unwrap().starts_with("amq.ctag-"));
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.body), "left");
    d.ack().await.unwrap();
    consumer.cancel().await.unwrap();
    assert!(consumer.next().await.is_none());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn qos_limits_unacked_deliveries_per_consumer() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("qos");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for i in 0..5 {
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), format!("m{i}")).await;
    }
    ch.qos(2, false).await.unwrap();
    let mut consumer = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    // Two unacked: the broker sends no third.
    let third = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(third.is_err(), "prefetch 2 let a third delivery through");
    first.ack().await.unwrap();
    let third = next_delivery(&mut consumer).await;
    assert_eq!(text(&third.body), "m2");
    // With multiple, one ack settles both outstanding deliveries and two more come.
    third.ack_multiple().await.unwrap();
    drop(second);
    let fourth = next_delivery(&mut consumer).await;
    let fifth = next_delivery(&mut consumer).await;
    assert_eq!((text(&fourth.body), text(&fifth.body)), ("m3", "m4"));
    fifth.ack_multiple().await.unwrap();
    assert_eq!(message_count(&ch, &queue).await, 0);
    consumer.cancel().await.unwrap();
    // Nothing was left unacked: closing the channel requeues nothing.
    ch.close().await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    assert_eq!(message_count(&ch, &queue).await, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn ack_nack_reject_with_multiple_and_requeue() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("settle");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for i in 0..4 {
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), format!("m{i}")).await;
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            ch.get(&queue, false)
                .await
                .unwrap()
                .expect("a message")
                .delivery,
        );
    }
    assert!(got.iter().all(|d| !d.redelivered));
    assert_eq!(
        got.iter().map(|d| text(&d.body)).collect::<Vec<_>>(),
        ["m0", "m1", "m2", "m3"]
    );
    // Channel::nack by tag with multiple and requeue: the first three go back, redelivered.
    ch.nack(got[2].delivery_tag, true, true).await.unwrap();
    // Channel::reject by tag with requeue: the fourth goes back too.
    ch.reject(got[3].delivery_tag, true).await.unwrap();
    let mut again = Vec::new();
    for _ in 0..4 {
        again.push(
            ch.get(&queue, false)
                .await
                .unwrap()
                .expect("requeued")
                .delivery,
        );
    }
    assert!(again.iter().all(|d| d.redelivered), "{again:?}");
    let mut bodies: Vec<_> = again.iter().map(|d| text(&d.body).to_owned()).collect();
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3"]);
    // Delivery::nack without requeue and Delivery::reject without requeue drop one each.
    again[0].nack(false).await.unwrap();
    again[1].reject(false).await.unwrap();
    // Delivery::reject with requeue puts one back once more.
    again[2].reject(true).await.unwrap();
    // Channel::ack by tag of the last with multiple settles it (the others are settled).
    ch.ack(again[3].delivery_tag, true).await.unwrap();
    let last = ch
        .get(&queue, false)
        .await
        .unwrap()
        .expect("requeued again");
    assert!(last.delivery.redelivered);
    assert_eq!(last.delivery.body, again[2].body);
    assert_eq!(last.message_count, 0);
    ch.ack(last.delivery.delivery_tag, false).await.unwrap();
    // Everything is settled: closing the channel requeues nothing.
    ch.close().await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    assert_eq!(message_count(&ch, &queue).await, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn recover_redelivers_unacked_consumer_deliveries() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("recover");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for i in 0..2 {
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), format!("m{i}")).await;
    }
    let mut consumer = ch.consume(&queue, ConsumeOptions::default()).await.unwrap();
    let a = next_delivery(&mut consumer).await;
    let b = next_delivery(&mut consumer).await;
    assert!(!a.redelivered && !b.redelivered);
    ch.recover().await.unwrap();
    let mut redelivered = vec![
        next_delivery(&mut consumer).await,
        next_delivery(&mut consumer).await,
    ];
    redelivered.sort_by(|x, y| x.body.cmp(&y.body));
    assert!(redelivered.iter().all(|d| d.redelivered));
    assert_eq!(text(&redelivered[0].body), "m0");
    assert_eq!(text(&redelivered[1].body), "m1");
    assert!(redelivered[0].delivery_tag.0 > b.delivery_tag.0);
    for d in &redelivered {
        d.ack().await.unwrap();
    }
    consumer.cancel().await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn confirm_select_numbers_publishes() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("confirm");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    // Outside confirm mode nothing is known of a publish.
    let c = ch
        .publish(
            "",
            &queue,
            PublishOptions::default(),
            BasicProperties::default(),
            "a",
        )
        .await
        .unwrap();
    assert_eq!(c.await.unwrap(), Confirmation::NotRequested);
    ch.confirm_select().await.unwrap();
    // Selecting twice is harmless.
    ch.confirm_select().await.unwrap();
    let mut confirms = Vec::new();
    for i in 0..200u32 {
        confirms.push(
            ch.publish(
                "",
                &queue,
                PublishOptions::default(),
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
    assert_eq!(message_count(&ch, &queue).await, 201);
    // tx.select on a confirm channel is refused locally.
    let err = ch.tx_select().await.unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::ConfirmAndTx)),
        "{err:?}"
    );
    assert!(!ch.is_closed());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn tx_commit_and_rollback() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("tx");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.tx_select().await.unwrap();
    let sent = ch
        .publish(
            "",
            &queue,
            PublishOptions::default(),
            BasicProperties::default(),
            "committed",
        )
        .await
        .unwrap();
    assert_eq!(sent.await.unwrap(), Confirmation::NotRequested);
    // Not visible before the commit.
    assert_eq!(message_count(&ch, &queue).await, 0);
    ch.tx_commit().await.unwrap();
    let sent = ch
        .publish(
            "",
            &queue,
            PublishOptions::default(),
            BasicProperties::default(),
            "rolled back",
        )
        .await
        .unwrap();
    assert_eq!(sent.await.unwrap(), Confirmation::NotRequested);
    ch.tx_rollback().await.unwrap();
    let got = ch
        .get(&queue, false)
        .await
        .unwrap()
        .expect("the committed message");
    assert_eq!(text(&got.delivery.body), "committed");
    assert_eq!(got.message_count, 0);
    // The ack is transactional too: it takes effect with the commit.
    got.delivery.ack().await.unwrap();
    ch.tx_commit().await.unwrap();
    assert!(ch.get(&queue, false).await.unwrap().is_none());
    // confirm.select on a tx channel is refused locally.
    let err = ch.confirm_select().await.unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::ConfirmAndTx)),
        "{err:?}"
    );
    // tx.commit on a channel that is not transactional is 406.
    let plain = conn.open_channel().await.unwrap();
    let err = plain.tx_commit().await.unwrap_err();
    assert_eq!(
        err.reply_code(),
        Some(ReplyCode::PRECONDITION_FAILED),
        "{err}"
    );
    conn.close().await.unwrap();
}

#[tokio::test]
async fn flow_resume_is_accepted_and_pause_refused_locally() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    ch.flow(true).await.unwrap();
    let err = ch.flow(false).await.unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::NotAllowed(_))),
        "{err:?}"
    );
    // Neither hurt the channel or the connection.
    let queue = unique("flow");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    assert!(!conn.is_closed());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn channel_close_and_reopen() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let id = ch.id();
    ch.close().await.unwrap();
    assert!(ch.is_closed());
    // Closing again is fine; calls on a closed channel fail without reaching the broker.
    ch.close().await.unwrap();
    let err = ch
        .queue_declare(&unique("x"), exclusive())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ChannelClosed(ref r) if r.code == ReplyCode::SUCCESS),
        "{err:?}"
    );
    // The number is free again.
    let again = conn.open_channel().await.unwrap();
    assert_eq!(again.id(), id);
    again
        .queue_declare(&unique("y"), exclusive())
        .await
        .unwrap();
    conn.close().await.unwrap();
}
