//! The blast peer: `amqp-wire`'s codec playing an infinitely fast broker on loopback, so the
//! client is the only bottleneck.
//!
//! It completes the handshake (connection.start offering PLAIN, tune, open-ok), answers
//! channel.open, confirm.select, basic.qos, queue.declare and basic.consume, then:
//! - for a consumer of `blast-N`, floods N `basic.deliver` + header + 16 B body as fast as the
//!   socket takes them, keeping at most the consumer's prefetch count unacknowledged (acks are read and
//!   counted, in order, `multiple` or not);
//! - for a publisher in confirm mode, swallows publishes and, after each read, acks everything
//!   received so far with one `basic.ack` (`multiple`), as RabbitMQ batches its confirms.
//!
//! It runs on a thread of its own with a current-thread tokio runtime, in the harness's
//! process: its CPU time is the harness's, never the client's.

use std::io;
use std::net::SocketAddr;

use amqp_wire::methods::{
    BasicAck, BasicCancelOk, BasicConsumeOk, BasicDeliver, BasicQosOk, ChannelCloseOk,
    ChannelOpenOk, ConfirmSelectOk, ConnectionCloseOk, ConnectionOpenOk, ConnectionStart,
    ConnectionTune, QueueDeclareOk, QueueDeleteOk,
};
use amqp_wire::{
    BasicProperties, ChannelId, ContentHeader, DeliveryTag, FieldTable, Frame, FrameDecoder,
    LongStr, Method, ShortStr, Transmit,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The frame_max offered (RabbitMQ's default).
const FRAME_MAX: u32 = 131_072;
/// Octets queued for the socket before the flood waits for a write.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// The body of every flooded delivery.
const BODY: &[u8; 16] = b"0123456789abcdef";

/// Starts the blast peer on a loopback port; returns its address.
///
/// # Errors
/// When no loopback port can be bound, or the thread cannot start.
pub(crate) fn start() -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("blast-peer".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Err(e) = session(stream).await {
                            eprintln!("blast peer: session ended: {e}");
                        }
                    });
                }
            });
        })?;
    Ok(addr)
}

/// The consumer being flooded.
struct Flood {
    channel: ChannelId,
    /// One whole delivery (method, header, body frames) with delivery tag 0.
    template: Bytes,
    /// Where the 8-octet delivery tag sits in `template`.
    tag_at: usize,
    no_ack: bool,
    prefetch: u64,
    /// The deliveries to make: the number ending the queue's name (`blast-500000`), as if the
    /// queue held that many; without one, no end.
    limit: u64,
    sent: u64,
    acked: u64,
}

impl Flood {
    fn new(
        channel: ChannelId,
        consumer_tag: ShortStr,
        no_ack: bool,
        prefetch: u16,
        limit: u64,
    ) -> Self {
        let deliver = BasicDeliver {
            consumer_tag: consumer_tag.clone(),
            delivery_tag: DeliveryTag(0),
            redelivered: false,
            exchange: ShortStr::from_static(""),
            routing_key: ShortStr::from_static("blast"),
        };
        let header = ContentHeader {
            body_size: BODY.len() as u64,
            properties: BasicProperties::default(),
        };
        let mut out = Transmit::new();
        out.push_content_frames(
            channel,
            &Method::BasicDeliver(deliver),
            &header,
            Bytes::from_static(BODY),
            FRAME_MAX,
        )
        .expect("a 16-octet delivery fits");
        let mut template = BytesMut::new();
        template.put(&mut out);
        // Frame header (7), class and method ids (4), the consumer tag's length and octets.
        let tag_at = 7 + 4 + 1 + consumer_tag.as_bytes().len();
        Self {
            channel,
            template: template.freeze(),
            tag_at,
            no_ack,
            prefetch: u64::from(prefetch),
            limit,
            sent: 0,
            acked: 0,
        }
    }

    /// Appends deliveries to `out` while the window and the high-water mark allow.
    fn refill(&mut self, out: &mut BytesMut) {
        while out.len() < OUT_HIGH_WATER
            && self.sent < self.limit
            && (self.no_ack || self.prefetch == 0 || self.sent - self.acked < self.prefetch)
        {
            self.sent += 1;
            let start = out.len();
            out.extend_from_slice(&self.template);
            out[start + self.tag_at..start + self.tag_at + 8]
                .copy_from_slice(&self.sent.to_be_bytes());
        }
    }
}

/// One client connection's state.
#[derive(Default)]
struct Peer {
    out: BytesMut,
    prefetch: u16,
    flood: Option<Flood>,
    /// The channel in confirm mode, and the publishes received / acked on it.
    confirm: Option<ChannelId>,
    published: u64,
    confirmed: u64,
    closed: bool,
}

impl Peer {
    fn send(&mut self, channel: ChannelId, method: impl Into<Method>) {
        let mut wire = BytesMut::new();
        Frame::Method(channel, method.into())
            .encode(&mut wire)
            .expect("a reply encodes");
        self.out.extend_from_slice(&wire);
    }

    fn handle(&mut self, frame: Frame) {
        let Frame::Method(ch, method) = frame else {
            return; // content headers and bodies of publishes, heartbeats: swallowed
        };
        match method {
            Method::BasicPublish(_) if self.confirm == Some(ch) => self.published += 1,
            Method::BasicAck(ack) => {
                if let Some(flood) = &mut self.flood {
                    flood.acked = flood.acked.max(ack.delivery_tag.0);
                }
            }
            Method::ConnectionStartOk(_) => self.send(
                ChannelId::CONNECTION,
                ConnectionTune {
                    channel_max: 2047,
                    frame_max: FRAME_MAX,
                    // RabbitMQ's default. Runs are far shorter than 60 s: nobody misses one.
                    heartbeat: 60,
                },
            ),
            Method::ConnectionOpen(_) => self.send(ChannelId::CONNECTION, ConnectionOpenOk),
            Method::ChannelOpen(_) => self.send(ch, ChannelOpenOk),
            Method::ConfirmSelect(_) => {
                self.confirm = Some(ch);
                self.send(ch, ConfirmSelectOk);
            }
            Method::BasicQos(qos) => {
                self.prefetch = qos.prefetch_count;
                self.send(ch, BasicQosOk);
            }
            Method::QueueDeclare(declare) => {
                let queue = if declare.queue.as_bytes().is_empty() {
                    ShortStr::from_static("amq.gen-blast")
                } else {
                    declare.queue
                };
                self.send(
                    ch,
                    QueueDeclareOk {
                        queue,
                        message_count: 0,
                        consumer_count: 0,
                    },
                );
            }
            Method::QueueDelete(_) => self.send(ch, QueueDeleteOk { message_count: 0 }),
            Method::BasicConsume(consume) => {
                let tag = if consume.consumer_tag.as_bytes().is_empty() {
                    ShortStr::from_static("amq.ctag-blast")
                } else {
                    consume.consumer_tag
                };
                self.send(
                    ch,
                    BasicConsumeOk {
                        consumer_tag: tag.clone(),
                    },
                );
                let limit = consume
                    .queue
                    .to_str()
                    .ok()
                    .and_then(|q| q.rsplit('-').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX);
                self.flood = Some(Flood::new(ch, tag, consume.no_ack, self.prefetch, limit));
            }
            Method::BasicCancel(cancel) => {
                self.flood = None;
                self.send(
                    ch,
                    BasicCancelOk {
                        consumer_tag: cancel.consumer_tag,
                    },
                );
            }
            Method::ChannelClose(_) => {
                if self.flood.as_ref().is_some_and(|f| f.channel == ch) {
                    self.flood = None;
                }
                self.send(ch, ChannelCloseOk);
            }
            Method::ConnectionClose(_) => {
                self.flood = None;
                self.send(ChannelId::CONNECTION, ConnectionCloseOk);
                self.closed = true;
            }
            Method::ConnectionCloseOk(_) => self.closed = true,
            _ => {}
        }
    }

    /// After a read: one `basic.ack` (`multiple`) for every publish received so far.
    fn confirm_received(&mut self) {
        let Some(ch) = self.confirm else {
            return;
        };
        if self.published > self.confirmed {
            self.confirmed = self.published;
            self.send(
                ch,
                BasicAck {
                    delivery_tag: DeliveryTag(self.published),
                    multiple: true,
                },
            );
        }
    }
}

/// What woke the session loop.
enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
}

async fn session(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut protocol_header = [0u8; 8];
    reader.read_exact(&mut protocol_header).await?;
    let mut peer = Peer::default();
    peer.send(ChannelId::CONNECTION, start_method());
    let mut decoder = FrameDecoder::new(FRAME_MAX);
    let mut rbuf = BytesMut::with_capacity(256 * 1024);
    loop {
        if let Some(flood) = &mut peer.flood {
            flood.refill(&mut peer.out);
        }
        if peer.closed && peer.out.is_empty() {
            // Closing with unread octets would reset the connection, and a reset can discard
            // the close-ok before the client reads it: let the client close first.
            writer.shutdown().await?;
            let drain = async {
                while reader.read_buf(&mut rbuf).await? > 0 {
                    rbuf.clear();
                }
                Ok::<(), io::Error>(())
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
            return Ok(());
        }
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(256 * 1024);
        }
        let wake = tokio::select! {
            r = reader.read_buf(&mut rbuf) => Wake::Read(r),
            r = writer.write(&peer.out), if !peer.out.is_empty() => Wake::Wrote(r),
        };
        match wake {
            Wake::Read(r) => {
                if r? == 0 {
                    return Ok(());
                }
                while let Some(frame) = decoder
                    .decode(&mut rbuf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                {
                    peer.handle(frame);
                }
                peer.confirm_received();
            }
            Wake::Wrote(r) => {
                let n = r?;
                peer.out.advance(n);
            }
        }
    }
}

/// `connection.start` as RabbitMQ sends it, with the capabilities clients look for.
fn start_method() -> ConnectionStart {
    let mut capabilities = FieldTable::new();
    for name in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        capabilities.insert(name, true);
    }
    let mut server_properties = FieldTable::new();
    server_properties.insert("product", "amqp-benches blast peer");
    server_properties.insert("version", "0.1.0");
    server_properties.insert("capabilities", capabilities);
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties,
        mechanisms: LongStr::from("PLAIN AMQPLAIN"),
        locales: LongStr::from("en_US"),
    }
}
