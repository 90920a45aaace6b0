//! Helpers for the tests that talk to a real RabbitMQ at `AMQP_URL`.
//!
//! A missing broker is a loud failure that says how to start one, never a silent skip.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use amqp_wire::methods::{
    ChannelOpen, ConnectionOpen, ConnectionStartOk, ConnectionTune, ConnectionTuneOk,
};
use amqp_wire::{
    ChannelId, FieldTable, FieldValue, Frame, FrameDecoder, LongStr, Method, ShortStr,
};
use bytes::BytesMut;

pub mod at_least_once;
pub mod cluster;
pub mod hostile;
pub mod private_node;
pub mod proxy;
pub mod rabbitmqctl;

/// The broker URL the tests use: `AMQP_URL`, or RabbitMQ's default on loopback.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `host:port` of the first endpoint of [`amqp_url`].
pub fn broker_addr() -> String {
    let url = amqp_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let first = host_port.split(',').next().unwrap_or(host_port);
    if first.contains(':') {
        first.to_owned()
    } else {
        format!("{first}:5672")
    }
}

/// A unique name for this test run's queues and exchanges, so runs on a shared broker never
/// collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "amqp-rs-test.{prefix}.{}.{nanos}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A blocking AMQP session built from nothing but `amqp-wire`'s codec: the tests use it to
/// check the codec's bytes against the real broker before any client exists on top.
pub struct RawSession {
    stream: TcpStream,
    decoder: FrameDecoder,
    read_buf: BytesMut,
    /// `frame_max` agreed in the handshake.
    pub frame_max: u32,
}

impl RawSession {
    /// Connects, sends the protocol header and completes the handshake as guest on vhost `/`.
    ///
    /// # Panics
    /// With a message that says how to start a broker when none answers.
    pub fn open() -> Self {
        let (mut s, tune) = Self::open_to_tune();
        s.tune_ok_and_open(tune.frame_max, tune.channel_max);
        let Frame::Method(_, Method::ConnectionOpenOk(_)) = s.recv() else {
            panic!("expected connection.open-ok");
        };
        s
    }

    /// Connects and answers `connection.start`; returns the broker's `connection.tune`, for a
    /// test that tunes the connection itself ([`RawSession::tune_ok_and_open`]).
    ///
    /// # Panics
    /// As [`RawSession::open`].
    pub fn open_to_tune() -> (Self, ConnectionTune) {
        let addr = broker_addr();
        let stream = TcpStream::connect(&addr).unwrap_or_else(|e| {
            panic!(
                "no RabbitMQ answers at {addr} ({e}). Start one with `scripts/ensure-rabbitmq` \
                 (installs and starts the Debian package as root), `docker compose up -d`, \
                 or point AMQP_URL at a broker"
            )
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set read timeout");
        stream.set_nodelay(true).expect("set nodelay");
        let mut s = Self {
            stream,
            decoder: FrameDecoder::new(0),
            read_buf: BytesMut::new(),
            frame_max: 0,
        };
        s.write_raw(&amqp_wire::ProtocolVersion::AMQP_0_9_1.header());
        let tune = s.start_ok();
        (s, tune)
    }

    fn start_ok(&mut self) -> ConnectionTune {
        let Frame::Method(_, Method::ConnectionStart(start)) = self.recv() else {
            panic!("expected connection.start");
        };
        assert!(start.mechanisms.to_str().is_ok_and(|m| m.contains("PLAIN")));
        let mut capabilities = FieldTable::new();
        capabilities.insert("consumer_cancel_notify", true);
        capabilities.insert("connection.blocked", true);
        capabilities.insert("authentication_failure_close", true);
        let mut props = FieldTable::new();
        props.insert("product", "amqp-rs tests");
        props.insert("capabilities", FieldValue::Table(capabilities));
        self.send_method(
            ChannelId(0),
            ConnectionStartOk {
                client_properties: props,
                response: LongStr::from("\0guest\0guest"),
                ..Default::default()
            },
        );
        let Frame::Method(_, Method::ConnectionTune(tune)) = self.recv() else {
            panic!("expected connection.tune");
        };
        tune
    }

    /// Sends `connection.tune-ok` with `frame_max` (no heartbeats) and `connection.open` for
    /// vhost `/`; the broker's answer is for the caller to read.
    pub fn tune_ok_and_open(&mut self, frame_max: u32, channel_max: u16) {
        self.frame_max = frame_max;
        self.decoder.set_max_frame_size(frame_max);
        self.send_method(
            ChannelId(0),
            ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            },
        );
        self.send_method(
            ChannelId(0),
            ConnectionOpen {
                virtual_host: ShortStr::from_static("/"),
            },
        );
    }

    /// Opens channel `id` and waits for open-ok.
    pub fn open_channel(&mut self, id: u16) {
        self.send_method(ChannelId(id), ChannelOpen);
        match self.recv() {
            Frame::Method(ch, Method::ChannelOpenOk(_)) if ch.0 == id => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    /// Encodes and writes one method frame.
    pub fn send_method(&mut self, channel: ChannelId, method: impl Into<Method>) {
        self.send(&Frame::Method(channel, method.into()));
    }

    /// Encodes and writes one frame.
    pub fn send(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        frame.encode(&mut out).expect("frame fits");
        self.write_raw(&out);
    }

    /// Writes octets as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to broker");
    }

    /// Reads the next frame (heartbeats are skipped).
    ///
    /// # Panics
    /// When the broker closes the socket, sends a malformed frame, or says nothing for 10 s.
    pub fn recv(&mut self) -> Frame {
        loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(Frame::Heartbeat)) => continue,
                Ok(Some(frame)) => return frame,
                Ok(None) => {}
                Err(e) => panic!("broker sent a frame our decoder refuses: {e}"),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("read from broker");
            assert!(n > 0, "broker closed the connection");
            self.read_buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads raw octets until the broker closes the socket or `limit` octets arrived.
    pub fn read_until_close(&mut self, limit: usize) -> Vec<u8> {
        let mut out = self.read_buf.split().to_vec();
        let mut chunk = [0u8; 1024];
        while out.len() < limit {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
        out
    }
}

/// Connects an `amqp-client` connection to [`amqp_url`].
///
/// # Panics
/// With a message that says how to start a broker when none answers.
pub async fn connect() -> amqp_client::Connection {
    let url = amqp_url();
    amqp_client::Connection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to RabbitMQ at {url} ({e}). Start one with `scripts/ensure-rabbitmq` \
             (installs and starts the Debian package as root), `docker compose up -d`, \
             or point AMQP_URL at a broker"
        )
    })
}

/// [`amqp_url`] with `query` options added (`heartbeat=1`, `frame_max=4096`, ...).
pub fn url_with(query: &str) -> String {
    let url = amqp_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Connects an `amqp-client` connection to [`amqp_url`] with `query` options added.
///
/// # Panics
/// When the broker does not accept the connection.
pub async fn connect_with_query(query: &str) -> amqp_client::Connection {
    let url = url_with(query);
    amqp_client::Connection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// The configuration of [`amqp_url`], to change before connecting.
///
/// # Panics
/// When `AMQP_URL` is not a valid URI.
pub fn config() -> amqp_client::ConnectionConfig {
    amqp_client::ConnectionConfig::from_uri(&amqp_url()).expect("AMQP_URL is a valid URI")
}

/// Options for an exclusive (server-named or not) queue: deleted with its connection, so a
/// failed test leaves nothing behind, and allowed on RabbitMQ 4.x.
pub fn exclusive() -> amqp_client::QueueDeclareOptions {
    amqp_client::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

/// Options for a passive declare: finds a queue (404 when it does not exist), changes nothing.
pub fn passive() -> amqp_client::QueueDeclareOptions {
    amqp_client::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

/// Runs `body`, then deletes `queue` whether it passed or panicked, on a connection of its
/// own (the test's may be the thing that failed).
pub async fn deleting_afterwards(queue: &str, body: impl Future<Output = ()>) {
    use futures_util::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    let admin = connect().await;
    let cleanup = match admin.open_channel().await {
        Ok(channel) => channel.queue_delete(queue, Default::default()).await,
        Err(e) => Err(e),
    };
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    cleanup.expect("delete the queue");
}

/// How many messages `queue` holds ready, by a passive declare on `ch`.
///
/// # Panics
/// When the declare fails (the queue is missing, say).
pub async fn message_count(ch: &amqp_client::Channel, queue: &str) -> u32 {
    ch.queue_declare(queue, passive())
        .await
        .expect("passive queue.declare")
        .message_count
}

/// Publishes on a channel in confirm mode and waits for the broker's answer.
///
/// # Panics
/// When the publish fails or the broker does not answer within 10 s.
pub async fn publish_confirmed(
    channel: &amqp_client::Channel,
    exchange: &str,
    routing_key: &str,
    properties: amqp_client::BasicProperties,
    body: impl Into<bytes::Bytes>,
) -> amqp_client::Confirmation {
    let confirm = channel
        .publish(
            exchange,
            routing_key,
            amqp_client::PublishOptions::default(),
            properties,
            body,
        )
        .await
        .expect("publish");
    tokio::time::timeout(Duration::from_secs(10), confirm)
        .await
        .expect("no confirm within 10 s")
        .expect("confirm")
}

/// Polls `queue` with `basic.get` (manual ack) until a message is there, failing the test
/// with `what` after 10 s.
///
/// # Panics
/// When nothing comes in time, or a get fails.
pub async fn get_within(
    channel: &amqp_client::Channel,
    queue: &str,
    what: &str,
) -> amqp_client::GetMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(got) = channel.get(queue, false).await.expect("basic.get") {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next delivery of `consumer`, failing the test after 10 s.
///
/// # Panics
/// When nothing arrives in time, the stream ends, or it yields an error.
pub async fn next_delivery(consumer: &mut amqp_client::Consumer) -> amqp_client::Delivery {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("no delivery within 10 s")
        .expect("consumer stream ended")
        .expect("consumer stream error")
}

/// Shows the client's `tracing` output in a test's output when `RUST_LOG` is set
/// (`RUST_LOG=amqp_client=debug cargo test -p amqp-tests ...`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
