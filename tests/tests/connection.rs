//! The connection as a whole: heartbeats on an idle connection, a thousand channels, calls
//! dropped mid-flight, timeouts (a broker that stops answering, a server that never
//! speaks), and a consumer that is not read.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, ConnectionConfig, ConsumeOptions, Endpoint, Error, ExchangeDeclareOptions,
    ExchangeKind,
};
use amqp_tests::{
    broker_addr, config, connect, connect_with_query, exclusive, message_count, next_delivery,
    passive, unique,
};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `config()` aimed at `addr` instead of the broker.
fn config_for(addr: SocketAddr) -> ConnectionConfig {
    ConnectionConfig {
        endpoints: vec![Endpoint::new(addr.ip().to_string(), addr.port())],
        ..config()
    }
}

#[tokio::test]
async fn heartbeats_keep_an_idle_connection_alive() {
    let conn = connect_with_query("heartbeat=1").await;
    assert_eq!(conn.tune().heartbeat, 1);
    let ch = conn.open_channel().await.unwrap();
    // Four intervals with no traffic but heartbeats: the broker (which closes after two
    // missed ones) and the client both keep the connection.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!conn.is_closed(), "{:?}", conn.close_reason());
    ch.queue_declare(&unique("after-idle"), exclusive())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_thousand_channels_on_one_connection() {
    let conn = connect().await;
    let channels = futures_util::future::try_join_all((0..1000).map(|_| conn.open_channel()))
        .await
        .unwrap();
    let mut ids: Vec<u16> = channels.iter().map(|c| c.id().0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "channel numbers are unique");
    let max = conn.tune().channel_max;
    assert!(max == 0 || ids.iter().all(|&id| id >= 1 && id <= max));
    // Use every one.
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    futures_util::future::try_join_all(
        channels
            .iter()
            .map(|ch| ch.exchange_declare("amq.direct", ExchangeKind::Direct, passive.clone())),
    )
    .await
    .unwrap();
    futures_util::future::try_join_all(channels.iter().map(|ch| ch.close()))
        .await
        .unwrap();
    assert!(channels.iter().all(amqp_client::Channel::is_closed));
    // Their numbers are free again: the lowest is reused.
    let again = conn.open_channel().await.unwrap();
    assert_eq!(again.id().0, 1);
    again
        .queue_declare(&unique("after-1000"), exclusive())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn dropping_calls_mid_flight_loses_nothing() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();

    // A declare dropped after it was sent: the broker still declares the queue, and the
    // reply that comes for nobody does not confuse the next call.
    let dropped = unique("dropped-declare");
    let polled_once = ch.queue_declare(&dropped, exclusive()).now_or_never();
    assert!(polled_once.is_none(), "a declare cannot finish in one poll");
    let next = unique("next-declare");
    let info = ch.queue_declare(&next, exclusive()).await.unwrap();
    assert_eq!(info.name, next.as_str());
    ch.queue_declare(&dropped, passive()).await.unwrap();

    // A get dropped after it was sent: its message is requeued, not lost.
    ch.confirm_select().await.unwrap();
    amqp_tests::publish_confirmed(&ch, "", &next, BasicProperties::default(), "precious").await;
    tokio::select! {
        biased;
        _ = ch.get(&next, false) => panic!("a get cannot finish in one poll"),
        () = std::future::ready(()) => {}
    }
    let got = amqp_tests::get_within(&ch, &next, "the dropped get's message never came back").await;
    assert_eq!(&got.delivery.body[..], b"precious");
    assert!(got.delivery.redelivered, "it was requeued");
    got.delivery.ack().await.unwrap();
    assert!(ch.get(&next, false).await.unwrap().is_none());

    // A consume dropped mid-flight: the consumer the broker started is cancelled and its
    // deliveries requeued.
    amqp_tests::publish_confirmed(&ch, "", &next, BasicProperties::default(), "again").await;
    let polled_once = ch.consume(&next, ConsumeOptions::default()).now_or_never();
    assert!(polled_once.is_none());
    let got = amqp_tests::get_within(&ch, &next, "the dropped consume kept the message").await;
    assert_eq!(&got.delivery.body[..], b"again");
    got.delivery.ack().await.unwrap();

    assert!(!ch.is_closed());
    assert!(!conn.is_closed());
    conn.close().await.unwrap();
}

/// A TCP proxy to the broker whose broker-to-client direction can be held: what the broker
/// sends meanwhile is delivered, late, once released.
struct PausableProxy {
    addr: SocketAddr,
    paused: watch::Sender<bool>,
}

impl PausableProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            let (client, _) = listener.accept().await?;
            let broker = TcpStream::connect(broker_addr()).await?;
            let (mut client_read, mut client_write) = client.into_split();
            let (mut broker_read, mut broker_write) = broker.into_split();
            let up = tokio::io::copy(&mut client_read, &mut broker_write);
            let down = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = broker_read.read(&mut buf).await?;
                    if n == 0 {
                        return client_write.shutdown().await;
                    }
                    rx.wait_for(|paused| !*paused)
                        .await
                        .map_err(io::Error::other)?;
                    client_write.write_all(&buf[..n]).await?;
                }
            };
            let (up, down) = tokio::join!(up, down);
            up.and(down)
        });
        Self { addr, paused }
    }
}

#[tokio::test]
async fn an_unanswered_call_times_out_and_the_late_reply_is_ignored() {
    let proxy = PausableProxy::start().await;
    let conn = amqp_client::Connection::connect_with(config_for(proxy.addr))
        .await
        .unwrap();
    let ch = conn.open_channel().await.unwrap();
    ch.queue_declare(&unique("before"), exclusive())
        .await
        .unwrap();

    proxy.paused.send_replace(true);
    let late = unique("late");
    let started = Instant::now();
    let err = ch
        .with_timeout(Duration::from_millis(300))
        .queue_declare(&late, exclusive())
        .await
        .unwrap_err();
    match err {
        Error::Timeout { operation, after } => {
            assert_eq!(operation, "queue.declare");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected Error::Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!ch.is_closed(), "a timeout ends only the call");

    // Released: the late declare-ok goes to nobody, and the next call gets its own reply.
    proxy.paused.send_replace(false);
    let next = unique("next");
    let info = ch.queue_declare(&next, exclusive()).await.unwrap();
    assert_eq!(info.name, next.as_str());
    let info = ch.queue_declare(&late, passive()).await.unwrap();
    assert_eq!(info.name, late.as_str());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_server_that_never_speaks_times_out_the_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds the sockets, never answering the protocol header.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            held.push(socket);
        }
    });
    for _ in 0..3 {
        let config = ConnectionConfig {
            connection_timeout: Duration::from_millis(300),
            ..config_for(addr)
        };
        let started = Instant::now();
        let err = amqp_client::Connection::connect_with(config)
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        match err {
            Error::Timeout { operation, after } => {
                assert_eq!(operation, "connect");
                assert_eq!(after, Duration::from_millis(300));
            }
            other => panic!("expected Error::Timeout, got {other:?}"),
        }
        assert!(
            elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
    }
    silent.abort();
}

#[tokio::test]
async fn a_consumer_that_is_not_read_holds_back_instead_of_buffering() {
    const COUNT: u32 = 5000;
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("unread");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    let mut confirms = Vec::with_capacity(COUNT as usize);
    for i in 0..COUNT {
        // 1 KiB each, 5 MB in all: more than the socket buffers hold.
        let mut body = vec![0u8; 1024];
        body[..4].copy_from_slice(&i.to_be_bytes());
        confirms.push(
            ch.publish(
                "",
                &queue,
                Default::default(),
                BasicProperties::default(),
                body,
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        c.await.unwrap();
    }
    // No qos: the broker sends everything it can; the consumer buffers 10.
    let consuming = conn.open_channel().await.unwrap();
    let mut consumer = consuming
        .consume(
            &queue,
            ConsumeOptions {
                buffer: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!conn.is_closed());
    for i in 0..COUNT {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(&d.body[..4], &i.to_be_bytes(), "delivery {i} out of order");
        assert_eq!(d.body.len(), 1024);
        assert!(!d.redelivered);
        d.ack().await.unwrap();
    }
    consumer.cancel().await.unwrap();
    let info = ch.queue_declare(&queue, passive()).await.unwrap();
    assert_eq!((info.message_count, info.consumer_count), (0, 0));
    // Every ack reached the broker: closing the channel requeues nothing.
    consuming.close().await.unwrap();
    assert_eq!(message_count(&ch, &queue).await, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn closing_with_an_unread_consumer_does_not_hang() {
    let conn = connect().await;
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("unread-close");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for i in 0..50u32 {
        amqp_tests::publish_confirmed(
            &ch,
            "",
            &queue,
            BasicProperties::default(),
            i.to_be_bytes().to_vec(),
        )
        .await;
    }
    let consumer = ch
        .consume(
            &queue,
            ConsumeOptions {
                buffer: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Deliveries fill the buffer and one waits for room: the socket is not read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(5), conn.close())
        .await
        .expect("close hung behind an unread consumer")
        .unwrap();
    assert!(conn.is_closed());
    drop(consumer);
}

/// A consumer left unread stops the socket reads; that must not make the client think the
/// broker is dead (heartbeat 1 s, unread for 4 s), and nothing is lost once it is read.
#[tokio::test]
async fn an_unread_consumer_does_not_look_like_a_dead_broker() {
    let conn = connect_with_query("heartbeat=1").await;
    let mut events = conn.events();
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("unread-heartbeat");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    for i in 0..10u8 {
        amqp_tests::publish_confirmed(&ch, "", &queue, Default::default(), vec![i]).await;
    }
    let options = ConsumeOptions {
        buffer: Some(1),
        ..Default::default()
    };
    let mut consumer = ch.consume(&queue, options).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..10u8 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(&d.body[..], &[i]);
        d.ack().await.unwrap();
    }
    // No disconnection (and so no recovery) happened meanwhile.
    assert!(matches!(
        events.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
}
