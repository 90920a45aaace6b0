//! Every class of broker error surfaces as the right [`Error`] variant with its reply code:
//! 404, 405, 406 and 403 close only their channel; a refused vhost (530) and a refused login
//! end the connection attempt; a settle the engine refuses locally is [`Error::Usage`] and
//! the channel survives it.

use amqp_client::{
    BasicProperties, Confirmation, ConnectionError, Error, ExchangeDeclareOptions, ExchangeKind,
    FieldTable, PublishOptions, QueueDeclareOptions, ReplyCode, Sasl, UsageError,
};
use amqp_tests::{
    RawSession, config, connect, exclusive, message_count, passive, publish_confirmed, unique,
};
use amqp_wire::methods::{BasicAck, BasicGet, BasicPublish, QueueDeclare};
use amqp_wire::{ChannelId, ContentHeader, DeliveryTag, Frame, Method, ShortStr};
use bytes::Bytes;

fn assert_channel_closed(err: &Error, code: ReplyCode) {
    match err {
        Error::ChannelClosed(reason) => assert_eq!(reason.code, code, "{err}"),
        other => panic!("expected a channel closed with {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_to_a_missing_exchange_is_404() {
    let conn = connect().await;
    let missing = unique("no-exchange");

    // In confirm mode the publish's own confirm carries the channel's 404.
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let confirm = ch
        .publish(
            &missing,
            "k",
            PublishOptions::default(),
            BasicProperties::default(),
            "x",
        )
        .await
        .unwrap();
    let err = confirm.await.unwrap_err();
    assert_channel_closed(&err, ReplyCode::NOT_FOUND);
    assert!(ch.is_closed());
    assert!(err.reply_text().unwrap().contains(&missing), "{err}");

    // Without confirms the publish is sent and the next call on the channel fails.
    let ch = conn.open_channel().await.unwrap();
    let c = ch
        .publish(
            &missing,
            "k",
            PublishOptions::default(),
            BasicProperties::default(),
            "x",
        )
        .await
        .unwrap();
    assert_eq!(c.await.unwrap(), Confirmation::NotRequested);
    let err = ch
        .queue_declare(&unique("after"), exclusive())
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::NOT_FOUND);
    // Later publishes on the closed channel fail at once.
    let err = ch
        .publish(
            "",
            "k",
            PublishOptions::default(),
            BasicProperties::default(),
            "x",
        )
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::NOT_FOUND);

    // The connection lives on.
    let ch = conn.open_channel().await.unwrap();
    ch.queue_declare(&unique("fine"), exclusive())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn bind_to_a_missing_exchange_is_404() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("bind404");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    let err = ch
        .queue_bind(&queue, &unique("no-exchange"), "k", FieldTable::new())
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::NOT_FOUND);
    // An exchange-to-exchange binding with a missing source too.
    let ch = conn.open_channel().await.unwrap();
    let err = ch
        .exchange_bind("amq.fanout", &unique("no-exchange"), "", FieldTable::new())
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::NOT_FOUND);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn an_exclusive_queue_of_another_connection_is_405() {
    let owner = connect().await;
    let queue = unique("locked");
    owner
        .open_channel()
        .await
        .unwrap()
        .queue_declare(&queue, exclusive())
        .await
        .unwrap();
    let other = connect().await;
    let ch = other.open_channel().await.unwrap();
    let err = ch.queue_declare(&queue, passive()).await.unwrap_err();
    assert_channel_closed(&err, ReplyCode::RESOURCE_LOCKED);
    let ch = other.open_channel().await.unwrap();
    let err = ch.get(&queue, false).await.unwrap_err();
    assert_channel_closed(&err, ReplyCode::RESOURCE_LOCKED);
    assert!(!other.is_closed());
    other.close().await.unwrap();
    owner.close().await.unwrap();
}

#[tokio::test]
async fn redeclare_with_other_arguments_is_406() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("redeclare");
    let mut args = FieldTable::new();
    args.insert("x-max-length", 10i32);
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
    let mut other = FieldTable::new();
    other.insert("x-max-length", 20i32);
    let err = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                arguments: other,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
    assert!(err.reply_text().unwrap().contains("x-max-length"), "{err}");

    // An exchange redeclared with another type, too.
    let ch = conn.open_channel().await.unwrap();
    let exchange = unique("redeclare-ex");
    ch.exchange_declare(&exchange, ExchangeKind::Direct, Default::default())
        .await
        .unwrap();
    let err = ch
        .exchange_declare(&exchange, ExchangeKind::Fanout, Default::default())
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::PRECONDITION_FAILED);
    let ch = conn.open_channel().await.unwrap();
    ch.exchange_delete(&exchange, false).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_second_settle_is_refused_locally_and_the_channel_survives() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("double-ack");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for body in ["a", "b"] {
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), body).await;
    }
    let a = ch.get(&queue, false).await.unwrap().unwrap().delivery;
    let b = ch.get(&queue, false).await.unwrap().unwrap().delivery;

    // By tag on the channel: the engine knows the tag is settled and refuses the second.
    ch.ack(a.delivery_tag, false).await.unwrap();
    let err = ch.ack(a.delivery_tag, false).await.unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::UnknownDeliveryTag(t)) if t == a.delivery_tag.0),
        "{err:?}"
    );
    let err = ch.nack(a.delivery_tag, false, true).await.unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::UnknownDeliveryTag(_))),
        "{err:?}"
    );
    let err = ch.reject(DeliveryTag(999), false).await.unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::UnknownDeliveryTag(999))),
        "{err:?}"
    );

    // Through the delivery: refused before it reaches the engine.
    b.ack().await.unwrap();
    let err = b.ack().await.unwrap_err();
    assert!(
        matches!(err, Error::Usage(UsageError::UnknownDeliveryTag(_))),
        "{err:?}"
    );
    // Already settled through the channel (a settled by tag, then through the delivery).
    let err = ch.ack(b.delivery_tag, false).await.unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err:?}");

    // Nothing reached the broker: the channel is open and works.
    assert!(!ch.is_closed());
    assert_eq!(message_count(&ch, &queue).await, 0);
    conn.close().await.unwrap();
}

/// The broker's side of a double ack, which the client never lets through: sent raw with the
/// codec, the second ack closes the channel with 406.
#[test]
fn a_double_ack_on_the_wire_is_406() {
    let mut s = RawSession::open();
    s.open_channel(1);
    let ch = ChannelId(1);
    let queue = ShortStr::try_from(unique("raw-double-ack")).unwrap();
    s.send_method(
        ch,
        QueueDeclare {
            queue: queue.clone(),
            exclusive: true,
            ..Default::default()
        },
    );
    assert!(matches!(
        s.recv(),
        Frame::Method(_, Method::QueueDeclareOk(_))
    ));
    s.send_method(
        ch,
        BasicPublish {
            exchange: ShortStr::from_static(""),
            routing_key: queue.clone(),
            ..Default::default()
        },
    );
    let body = Bytes::from_static(b"x");
    s.send(&Frame::Header(
        ch,
        ContentHeader {
            body_size: 1,
            properties: BasicProperties::default(),
        },
    ));
    s.send(&Frame::Body(ch, body));
    s.send_method(
        ch,
        BasicGet {
            queue,
            no_ack: false,
        },
    );
    let Frame::Method(_, Method::BasicGetOk(ok)) = s.recv() else {
        panic!("expected get-ok")
    };
    assert!(matches!(s.recv(), Frame::Header(..)));
    assert!(matches!(s.recv(), Frame::Body(..)));
    for _ in 0..2 {
        s.send_method(
            ch,
            BasicAck {
                delivery_tag: ok.delivery_tag,
                multiple: false,
            },
        );
    }
    match s.recv() {
        Frame::Method(c, Method::ChannelClose(close)) => {
            assert_eq!(c, ch);
            assert_eq!(close.reply_code, ReplyCode::PRECONDITION_FAILED);
            assert_eq!((close.class_id, close.method_id), (60, 80));
        }
        other => panic!("expected channel.close 406, got {other:?}"),
    }
}

#[tokio::test]
async fn declaring_an_amq_prefixed_exchange_is_403() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            &format!("amq.{}", unique("reserved")),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
        )
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::ACCESS_REFUSED);
    // Binding a queue to the default exchange is 403 too.
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("default-bind");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    let err = ch
        .queue_bind(&queue, "", "k", FieldTable::new())
        .await
        .unwrap_err();
    assert_channel_closed(&err, ReplyCode::ACCESS_REFUSED);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn an_unknown_vhost_is_refused_with_530() {
    let mut config = config();
    config.virtual_host = unique("no-such-vhost");
    let err = amqp_client::Connection::connect_with(config)
        .await
        .unwrap_err();
    match &err {
        Error::Connection(ConnectionError::VhostRefused(reason)) => {
            assert_eq!(reason.code, ReplyCode::NOT_ALLOWED, "{err}");
        }
        other => panic!("expected VhostRefused, got {other:?}"),
    }
    assert_eq!(err.reply_code(), Some(ReplyCode::NOT_ALLOWED));
}

#[tokio::test]
async fn a_bad_password_is_refused() {
    let mut config = config();
    let user = match &config.sasl {
        Sasl::Plain { username, .. } => username.clone(),
        _ => "guest".to_owned(),
    };
    config.sasl = Sasl::plain(user, "definitely-not-the-password");
    let err = amqp_client::Connection::connect_with(config)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Connection(ConnectionError::AuthenticationFailed(_))
        ),
        "{err:?}"
    );
    assert_eq!(err.reply_code(), Some(ReplyCode::ACCESS_REFUSED));
    // The password is in no error text.
    assert!(!format!("{err} {err:?}").contains("definitely-not-the-password"));
}
