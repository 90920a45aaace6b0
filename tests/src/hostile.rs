//! A broker that breaks the rules, over TCP on loopback.
//!
//! Built from `amqp-wire`'s codec, it does the handshake as RabbitMQ would (with the tune a
//! test chooses), then runs whatever the test scripts for each connection: send garbage,
//! announce huge sizes, stop reading, never answer. Tests drive the real client (and the real
//! `amqp` binary) against it and check what they do: the close code they send, how long they
//! take to fail, how much memory they hold.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqp_wire::methods::{
    BasicConsumeOk, BasicGetEmpty, BasicQosOk, ChannelCloseOk, ChannelOpenOk, ConfirmSelectOk,
    ConnectionOpenOk, ConnectionStart, ConnectionTune,
};
use amqp_wire::{ChannelId, FieldTable, Frame, FrameDecoder, LongStr, Method, ShortStr};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// RabbitMQ's own tune: channel_max 2047, frame_max 128 KiB, heartbeat 60 s.
pub const RABBITMQ_TUNE: ConnectionTune = ConnectionTune {
    channel_max: 2047,
    frame_max: 131_072,
    heartbeat: 60,
};

/// A listening hostile broker; it stops listening when dropped.
#[derive(Debug)]
pub struct HostileBroker {
    port: u16,
    accept: JoinHandle<()>,
    /// The `connection.close` codes clients sent, and whether each client then closed its
    /// socket, per connection in order.
    pub closes: Arc<Mutex<Vec<ClientClose>>>,
}

/// How a client left a connection to the hostile broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientClose {
    /// The reply code of the `connection.close` it sent, if it sent one.
    pub code: Option<u16>,
    /// It sent `connection.close-ok` (to our close).
    pub close_ok: bool,
    /// It closed its socket afterwards (the broker read end-of-file).
    pub hung_up: bool,
}

impl HostileBroker {
    /// Listens on 127.0.0.1 and, for each connection, does the handshake with `tune`, then
    /// runs `script`.
    ///
    /// # Panics
    /// When it cannot listen on loopback.
    pub async fn start<F, Fut>(tune: ConnectionTune, script: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen on loopback");
        let port = listener.local_addr().expect("local address").port();
        let closes = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let seen = closes.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, seen, tune) = (script.clone(), seen.clone(), tune.clone());
                tokio::spawn(async move {
                    let mut peer = Peer::new(stream, seen);
                    if peer.handshake(tune).await.is_ok() {
                        script(peer).await;
                    }
                });
            }
        });
        Self {
            port,
            accept,
            closes,
        }
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the clients did so far, per connection.
    pub fn client_closes(&self) -> Vec<ClientClose> {
        self.closes.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for HostileBroker {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One client connection, from the broker's side.
#[derive(Debug)]
pub struct Peer {
    stream: TcpStream,
    decoder: FrameDecoder,
    inbox: BytesMut,
    closes: Arc<Mutex<Vec<ClientClose>>>,
}

impl Peer {
    fn new(stream: TcpStream, closes: Arc<Mutex<Vec<ClientClose>>>) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(0),
            inbox: BytesMut::new(),
            closes,
        }
    }

    async fn handshake(&mut self, tune: ConnectionTune) -> io::Result<()> {
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header).await?;
        let mut props = FieldTable::new();
        props.insert("product", "hostile");
        self.send_method(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: LongStr::from("PLAIN AMQPLAIN"),
                locales: LongStr::from("en_US"),
            },
        )
        .await?;
        self.expect("connection.start-ok").await?;
        self.send_method(0, tune).await?;
        self.expect("connection.tune-ok").await?;
        self.expect("connection.open").await?;
        self.send_method(0, ConnectionOpenOk).await
    }

    async fn expect(&mut self, name: &str) -> io::Result<()> {
        match self.recv_method().await {
            Some((_, m)) if m.name() == name => Ok(()),
            other => Err(io::Error::other(format!("wanted {name}, got {other:?}"))),
        }
    }

    /// Sends one frame.
    ///
    /// # Errors
    /// When the socket fails.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let mut out = BytesMut::new();
        frame
            .encode(&mut out)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.stream.write_all(&out).await
    }

    /// Sends a method on `channel`.
    ///
    /// # Errors
    /// When the socket fails.
    pub async fn send_method(&mut self, channel: u16, method: impl Into<Method>) -> io::Result<()> {
        self.send(&Frame::Method(ChannelId(channel), method.into()))
            .await
    }

    /// Sends octets as they are: frames a codec would never write.
    ///
    /// # Errors
    /// When the socket fails.
    pub async fn send_raw(&mut self, octets: &[u8]) -> io::Result<()> {
        self.stream.write_all(octets).await
    }

    /// The next frame the client sends; `None` once it closed its socket (or sent garbage).
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            match self.decoder.decode(&mut self.inbox) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.stream.read_buf(&mut self.inbox).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next method the client sends, heartbeats and content skipped.
    pub async fn recv_method(&mut self) -> Option<(ChannelId, Method)> {
        loop {
            if let Frame::Method(channel, method) = self.recv().await? {
                return Some((channel, method));
            }
        }
    }

    /// Answers what a client does before real work (channel.open, basic.qos,
    /// confirm.select, basic.consume, channel.close; basic.get with get-empty) until it sends
    /// a method named `name`, which it returns. Publishes are read and left unconfirmed.
    pub async fn serve_until(&mut self, name: &str) -> Option<(ChannelId, Method)> {
        loop {
            let (channel, method) = self.recv_method().await?;
            if method.name() == name {
                return Some((channel, method));
            }
            let reply: Option<Method> = match method {
                Method::ChannelOpen(_) => Some(ChannelOpenOk.into()),
                Method::BasicQos(_) => Some(BasicQosOk.into()),
                Method::ConfirmSelect(_) => Some(ConfirmSelectOk.into()),
                Method::ChannelClose(_) => Some(ChannelCloseOk.into()),
                Method::BasicGet(_) => Some(BasicGetEmpty.into()),
                Method::BasicConsume(consume) if !consume.no_wait => {
                    let tag = match consume.consumer_tag.is_empty() {
                        true => ShortStr::from_static("amq.ctag-hostile"),
                        false => consume.consumer_tag,
                    };
                    Some(BasicConsumeOk { consumer_tag: tag }.into())
                }
                _ => None,
            };
            if let Some(reply) = reply {
                self.send_method(channel.0, reply).await.ok()?;
            }
        }
    }

    /// Reads what the client sends until it closes its socket, answering nothing (not even
    /// its `connection.close`), and records how it left. Gives up after `limit`.
    pub async fn watch_client_leave(mut self, limit: Duration) {
        let mut seen = ClientClose::default();
        let watched = tokio::time::timeout(limit, async {
            while let Some(frame) = self.recv().await {
                match frame {
                    Frame::Method(_, Method::ConnectionClose(c)) => {
                        seen.code = Some(c.reply_code.0);
                    }
                    Frame::Method(_, Method::ConnectionCloseOk(_)) => seen.close_ok = true,
                    _ => {}
                }
            }
        })
        .await;
        seen.hung_up = watched.is_ok();
        if let Ok(mut closes) = self.closes.lock() {
            closes.push(seen);
        }
    }

    /// Stops reading for good, sending a heartbeat every `every` until the client hangs up
    /// or `limit` passes: what RabbitMQ does to a connection it blocked.
    pub async fn stop_reading(mut self, every: Duration, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.send(&Frame::Heartbeat).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The peak of this process's virtual and resident memory, in KiB (`VmPeak`, `VmHWM`).
///
/// # Panics
/// When `/proc/self/status` cannot be read (not Linux).
pub fn memory_peaks_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmPeak:"), field("VmHWM:"))
}
