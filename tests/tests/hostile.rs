//! The client against a broker that breaks the rules (a scripted broker on loopback, built
//! from our codec): every malformed input gets the right close code, the client hangs up and
//! the request in flight fails at once with the cause, whatever the broker does afterwards.

use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, Connection, ConnectionConfig, ConnectionEvent, Error, PublishOptions,
    ReplyCode,
};
use amqp_tests::hostile::{ClientClose, HostileBroker, Peer, RABBITMQ_TUNE};
use amqp_wire::methods::{BasicGetOk, ConfirmSelectOk, ConnectionClose, ConnectionTune};
use amqp_wire::{
    BasicProperties as WireProperties, ChannelId, ContentHeader, Frame, Method, ShortStr,
};
use bytes::{BufMut, Bytes, BytesMut};

/// A frame from its parts, as the codec never writes it.
fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xce);
    out
}

/// The encoded payload of a method (class, method and arguments).
fn method_payload(method: impl Into<Method>) -> Vec<u8> {
    let mut out = BytesMut::new();
    Frame::Method(ChannelId(1), method.into())
        .encode(&mut out)
        .expect("encodes");
    out[7..out.len() - 1].to_vec()
}

fn get_ok() -> Vec<u8> {
    frame(1, 1, &method_payload(BasicGetOk::default()))
}

/// A content header payload (class 60, weight 0, body size) with the given flags and
/// property octets.
fn header_payload(class: u16, body_size: u64, flags: u16, properties: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u16(class);
    out.put_u16(0);
    out.put_u64(body_size);
    out.put_u16(flags);
    out.extend_from_slice(properties);
    out.to_vec()
}

/// The `headers` property flag.
const HEADERS: u16 = 1 << 13;

/// A headers table whose one value is an array nested `depth` deep.
fn deep_table(depth: usize) -> Vec<u8> {
    let mut value = vec![b'A', 0, 0, 0, 0];
    for _ in 1..depth {
        let inner = value.clone();
        value = vec![b'A'];
        value.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        value.extend_from_slice(&inner);
    }
    let mut table = vec![1, b'k'];
    table.extend_from_slice(&value);
    let mut out = (table.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&table);
    out
}

/// The malformed inputs, each with the close code the client must answer it with.
fn scenarios() -> Vec<(&'static str, Vec<u8>, ReplyCode)> {
    let mut bad_end = get_ok();
    *bad_end.last_mut().expect("frame") = 0;
    let mut truncated = method_payload(BasicGetOk::default());
    truncated.truncate(8);
    truncated.push(200); // an exchange name of 200 octets, then nothing
    let with_header = |header: Vec<u8>| [get_ok(), frame(2, 1, &header)].concat();
    vec![
        ("bad frame end", bad_end, ReplyCode::FRAME_ERROR),
        (
            "oversize frame",
            [1, 0, 1, 0, 16, 0, 0].to_vec(),
            ReplyCode::FRAME_ERROR,
        ),
        (
            "unknown frame type",
            frame(9, 1, b"x"),
            ReplyCode::FRAME_ERROR,
        ),
        (
            "unknown method",
            frame(1, 1, &[0, 60, 3, 231]),
            ReplyCode::COMMAND_INVALID,
        ),
        (
            "body without header",
            frame(3, 1, b"body"),
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "body overrun",
            [
                with_header(header_payload(60, 1, 0, &[])),
                frame(3, 1, b"12345"),
            ]
            .concat(),
            ReplyCode::FRAME_ERROR,
        ),
        (
            "truncated string",
            frame(1, 1, &truncated),
            ReplyCode::SYNTAX_ERROR,
        ),
        (
            "bad table tag",
            with_header(header_payload(60, 0, HEADERS, &[0, 0, 0, 3, 1, b'k', b'Z'])),
            ReplyCode::SYNTAX_ERROR,
        ),
        (
            "15,000-deep table",
            with_header(header_payload(60, 0, HEADERS, &deep_table(15_000))),
            ReplyCode::SYNTAX_ERROR,
        ),
        (
            "method inside content",
            [get_ok(), get_ok()].concat(),
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "header of the wrong class",
            with_header(header_payload(10, 0, 0, &[])),
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "garbage table length",
            with_header(header_payload(60, 0, HEADERS, &[0xff, 0xff, 0xff, 0xff])),
            ReplyCode::SYNTAX_ERROR,
        ),
    ]
}

/// A broker that answers the client's `basic.get` with `reply`, then reads what the client
/// sends without answering anything, its socket left open.
async fn broker_answering_get_with(reply: Vec<u8>) -> HostileBroker {
    HostileBroker::start(RABBITMQ_TUNE, move |mut peer: Peer| {
        let reply = reply.clone();
        async move {
            if peer.serve_until("basic.get").await.is_none() {
                return;
            }
            if peer.send_raw(&reply).await.is_ok() {
                peer.watch_client_leave(Duration::from_secs(10)).await;
            }
        }
    })
    .await
}

/// Waits (a few seconds at most) for the broker to have seen the first client leave.
async fn first_leave(broker: &HostileBroker) -> ClientClose {
    for _ in 0..100 {
        if let Some(close) = broker.client_closes().first() {
            return close.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the client never left the hostile broker's connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_input_gets_its_close_code_and_the_request_fails_at_once() {
    amqp_tests::init_logging();
    for (name, reply, code) in scenarios() {
        let broker = broker_answering_get_with(reply).await;
        let conn = Connection::connect(&broker.url()).await.expect("connect");
        let channel = conn.open_channel().await.expect("channel");
        let started = Instant::now();
        let got = channel.get("q", false).await;
        let took = started.elapsed();
        eprintln!("{name}: failed after {took:?}");
        let error = got.expect_err(name);
        assert_eq!(error.reply_code(), Some(code), "{name}: {error}");
        assert!(
            took < Duration::from_secs(2),
            "{name}: failed after {took:?}"
        );
        let left = first_leave(&broker).await;
        assert_eq!(left.code, Some(code.0), "{name}: {left:?}");
        assert!(left.hung_up, "{name}: the client left its socket open");
        drop(conn);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_closes_and_keeps_its_socket_open_is_left_at_once() {
    let broker = HostileBroker::start(RABBITMQ_TUNE, |mut peer: Peer| async move {
        if peer.serve_until("basic.get").await.is_none() {
            return;
        }
        let close = ConnectionClose {
            reply_code: ReplyCode::CONNECTION_FORCED,
            reply_text: ShortStr::from_static("CONNECTION_FORCED - broker shutdown"),
            class_id: 0,
            method_id: 0,
        };
        if peer.send_method(0, close).await.is_ok() {
            peer.watch_client_leave(Duration::from_secs(10)).await;
        }
    })
    .await;
    let conn = Connection::connect(&broker.url()).await.expect("connect");
    let channel = conn.open_channel().await.expect("channel");
    let started = Instant::now();
    let error = channel
        .get("q", false)
        .await
        .expect_err("closed by the broker");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        error.reply_code(),
        Some(ReplyCode::CONNECTION_FORCED),
        "{error}"
    );
    let left = first_leave(&broker).await;
    assert!(left.close_ok && left.hung_up, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_offering_no_limits_gets_ours() {
    let unlimited = ConnectionTune {
        channel_max: 0,
        frame_max: u32::MAX,
        heartbeat: 0,
    };
    let broker = HostileBroker::start(unlimited, |mut peer: Peer| async move {
        peer.serve_until("never").await;
    })
    .await;
    let conn = Connection::connect(&broker.url()).await.expect("connect");
    let tune = conn.tune();
    assert_eq!(
        tune.frame_max, 131_072,
        "our frame_max, not the broker's 4 GiB"
    );
    assert_eq!(
        tune.heartbeat, 60,
        "heartbeats stay on against a broker offering none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_the_broker_never_sends_resolves_outcome_unknown() {
    let broker = HostileBroker::start(RABBITMQ_TUNE, |mut peer: Peer| async move {
        if let Some((channel, _)) = peer.serve_until("confirm.select").await {
            let _ = peer.send_method(channel.0, ConfirmSelectOk).await;
            // Reads the publish and never confirms it.
            peer.serve_until("never").await;
        }
    })
    .await;
    let mut config = ConnectionConfig::from_uri(&broker.url()).expect("url");
    config.confirm_timeout = Some(Duration::from_millis(500));
    let conn = Connection::connect_with(config).await.expect("connect");
    let channel = conn.open_channel().await.expect("channel");
    channel.confirm_select().await.expect("confirm.select");
    let confirm = publish_one(&channel).await;
    let started = Instant::now();
    let outcome = confirm.await;
    assert!(matches!(outcome, Err(Error::OutcomeUnknown)), "{outcome:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_timeouts_are_accepted_and_mean_no_deadline() {
    let broker = HostileBroker::start(RABBITMQ_TUNE, |mut peer: Peer| async move {
        peer.serve_until("never").await;
    })
    .await;
    let mut config = ConnectionConfig::from_uri(&broker.url()).expect("url");
    config.operation_timeout = Duration::MAX;
    config.connection_timeout = Duration::MAX;
    config.confirm_timeout = Some(Duration::MAX);
    config.blocked_timeout = Some(Duration::MAX);
    let conn = Connection::connect_with(config).await.expect("connect");
    let channel = conn.open_channel().await.expect("channel");
    let _unconfirmed = publish_one(&channel).await;
    drop(conn);
}

/// Publishes one small message to the default exchange.
async fn publish_one(channel: &amqp_client::Channel) -> amqp_client::Confirm {
    channel
        .publish(
            "",
            "q",
            PublishOptions::default(),
            BasicProperties::default(),
            "x",
        )
        .await
        .expect("publish")
}

/// A broker that stops reading after the channel opens, and goes on sending heartbeats every
/// 300 ms (what RabbitMQ does to a connection it blocked), offering a 1 s heartbeat.
async fn broker_that_stops_reading() -> HostileBroker {
    let tune = ConnectionTune {
        heartbeat: 1,
        ..RABBITMQ_TUNE
    };
    HostileBroker::start(tune, |mut peer: Peer| async move {
        if let Some((channel, _)) = peer.serve_until("channel.open").await {
            let _ = peer
                .send_method(channel.0, amqp_wire::methods::ChannelOpenOk)
                .await;
            peer.stop_reading(Duration::from_millis(300), Duration::from_secs(60))
                .await;
        }
    })
    .await
}

/// Publishes `count` messages of 64 KiB (outside confirm mode, a publish's `Confirm` says
/// whether the connection took it), or until one fails; returns the first failure and how long
/// it took.
async fn publish_many(channel: &amqp_client::Channel, count: usize) -> (Option<Error>, Duration) {
    let body = Bytes::from(vec![7u8; 64 * 1024]);
    let started = Instant::now();
    let mut taken = Vec::new();
    for _ in 0..count {
        let sent = channel
            .publish(
                "",
                "q",
                PublishOptions::default(),
                BasicProperties::default(),
                body.clone(),
            )
            .await;
        match sent {
            Ok(confirm) => taken.push(confirm),
            Err(e) => return (Some(e), started.elapsed()),
        }
    }
    for confirm in taken {
        if let Err(e) = confirm.await {
            return (Some(e), started.elapsed());
        }
    }
    (None, started.elapsed())
}

/// Without recovery, the publisher learns it: three heartbeat intervals without writing end
/// the connection, and the publish waiting on it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_reading_fails_the_publisher_within_its_deadlines() {
    let broker = broker_that_stops_reading().await;
    let mut config = ConnectionConfig::from_uri(&broker.url()).expect("url");
    config.recovery.enabled = false;
    let conn = Connection::connect_with(config).await.expect("connect");
    let channel = conn.open_channel().await.expect("channel");
    // 80 MiB: far more than the socket's buffers and our output bound.
    let (failure, took) = publish_many(&channel, 1280).await;
    let failure = failure.expect("80 MiB cannot all be handed to a broker that reads nothing");
    assert!(
        took < Duration::from_secs(10),
        "failed after {took:?}: {failure}"
    );
    assert!(
        matches!(conn.close_reason(), Some(Error::WriteStalled(_))),
        "{:?}",
        conn.close_reason()
    );
}

/// With recovery, the session is given up the same way (a recovery follows), and `close`
/// acts at once even while the output cannot drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_side_ends_the_session_and_close_still_works() {
    let broker = broker_that_stops_reading().await;
    let mut config = ConnectionConfig::from_uri(&broker.url()).expect("url");
    config.operation_timeout = Duration::from_secs(3);
    let conn = Connection::connect_with(config).await.expect("connect");
    let mut events = conn.events();
    let channel = conn.open_channel().await.expect("channel");
    let publisher = tokio::spawn(async move { publish_many(&channel, 128).await });
    let lost = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(ConnectionEvent::Disconnected { error }) = events.recv().await {
                return error;
            }
        }
    })
    .await
    .expect("the session ends within its write deadline");
    assert!(matches!(lost, Error::WriteStalled(_)), "{lost}");
    let started = Instant::now();
    let _ = conn.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "close took {:?}",
        started.elapsed()
    );
    assert!(conn.is_closed());
    let (_, took) = tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("the publisher does not hang")
        .expect("publisher task");
    assert!(took < Duration::from_secs(20));
}

#[test]
fn the_scenarios_are_frames_the_decoder_refuses_or_the_engine_rejects() {
    // A guard on the test's own inputs: a content header built here decodes as one when it
    // should, so the scenarios that use it test what they say.
    let header = header_payload(60, 0, 0, &[]);
    let decoded = ContentHeader::decode(&Bytes::from(header)).expect("a well-formed header");
    assert_eq!(decoded.properties, WireProperties::default());
}
