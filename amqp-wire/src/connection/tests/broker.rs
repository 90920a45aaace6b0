//! A scripted broker built from this crate's codec: it reads what the client engine sends and
//! feeds it frames, with time passed in by hand. Deterministic: no sockets, no sleeps.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::connection::{ClientConfig, Connection, Event};
use crate::frame::content::{BasicProperties, ContentHeader};
use crate::frame::method::Method;
use crate::frame::methods::{
    BasicDeliver, ChannelOpenOk, ConnectionOpenOk, ConnectionStart, ConnectionTune,
};
use crate::transmit::Transmit;
use crate::{ChannelId, DeliveryTag, FieldTable, Frame, FrameDecoder, LongStr, ShortStr};

/// RabbitMQ's defaults: channel_max 2047, frame_max 131072, heartbeat 60.
pub(crate) const TUNE: ConnectionTune = ConnectionTune {
    channel_max: 2047,
    frame_max: 131_072,
    heartbeat: 60,
};

pub(crate) struct Broker {
    pub(crate) conn: Connection,
    pub(crate) now: Duration,
    decoder: FrameDecoder,
    /// What the client wrote that the broker has not read yet.
    inbox: BytesMut,
    header_seen: bool,
}

impl Broker {
    pub(crate) fn new(config: ClientConfig) -> Self {
        // Any origin will do: the engine only compares and adds.
        let now = Duration::from_secs(1_000);
        Self {
            conn: Connection::client(config, now),
            now,
            decoder: FrameDecoder::new(0),
            inbox: BytesMut::new(),
            header_seen: false,
        }
    }

    /// A client that completed the handshake with RabbitMQ's defaults; events drained.
    pub(crate) fn connected() -> Self {
        Self::connected_with(ClientConfig::default(), TUNE)
    }

    pub(crate) fn connected_with(config: ClientConfig, tune: ConnectionTune) -> Self {
        let mut b = Self::new(config);
        b.send_method(0, start());
        b.expect_method(0, "connection.start-ok");
        b.send_method(0, tune);
        b.expect_method(0, "connection.tune-ok");
        b.expect_method(0, "connection.open");
        b.send_method(0, ConnectionOpenOk);
        assert!(matches!(b.events().as_slice(), [Event::Connected { .. }]));
        b
    }

    /// Opens a channel and answers open-ok; events drained.
    pub(crate) fn open_channel(&mut self) -> ChannelId {
        let id = self.conn.open_channel().expect("open_channel");
        self.expect_method(id.0, "channel.open");
        self.send_method(id.0, ChannelOpenOk);
        assert_eq!(self.events(), [Event::ChannelOpened(id)]);
        id
    }

    /// Reads the client's output into the inbox.
    fn pull(&mut self) {
        let mut out = Transmit::new();
        let _ = self.conn.poll_transmit(self.now, &mut out);
        while out.has_remaining() {
            let chunk = out.chunk();
            self.inbox.extend_from_slice(chunk);
            let n = chunk.len();
            out.advance(n);
        }
        if !self.header_seen && self.inbox.len() >= 8 {
            assert_eq!(
                &self.inbox[..8],
                b"AMQP\x00\x00\x09\x01",
                "protocol header first"
            );
            self.inbox.advance(8);
            self.header_seen = true;
        }
    }

    /// The next frame the client sent, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Frame> {
        self.pull();
        self.decoder
            .decode(&mut self.inbox)
            .expect("the client sent a malformed frame")
    }

    /// The next frame the client sent.
    pub(crate) fn recv(&mut self) -> Frame {
        self.try_recv().expect("the client sent nothing")
    }

    /// The next frame must be a method of that name on that channel; returns it.
    #[track_caller]
    pub(crate) fn expect_method(&mut self, channel: u16, name: &str) -> Method {
        match self.recv() {
            Frame::Method(ch, m) if ch.0 == channel && m.name() == name => m,
            other => panic!("expected {name} on channel {channel}, the client sent {other:?}"),
        }
    }

    /// The client sent nothing more.
    #[track_caller]
    pub(crate) fn expect_silence(&mut self) {
        if let Some(frame) = self.try_recv() {
            panic!("expected silence, the client sent {frame:?}");
        }
    }

    /// Feeds encoded octets to the client.
    pub(crate) fn send_raw(&mut self, octets: &[u8]) {
        let mut src = BytesMut::from(octets);
        self.conn.handle_input(self.now, &mut src);
    }

    pub(crate) fn send(&mut self, frame: Frame) {
        let mut wire = BytesMut::new();
        frame.encode(&mut wire).expect("encodable");
        self.send_raw(&wire);
    }

    pub(crate) fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        self.send(Frame::Method(ChannelId(channel), method.into()));
    }

    /// A content method followed by its header and body frames of at most `chunk` octets.
    pub(crate) fn send_content(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
        props: BasicProperties,
        body: &[u8],
        chunk: usize,
    ) {
        let ch = ChannelId(channel);
        self.send(Frame::Method(ch, method.into()));
        self.send(Frame::Header(
            ch,
            ContentHeader {
                body_size: body.len() as u64,
                properties: props,
            },
        ));
        for piece in body.chunks(chunk.max(1)) {
            self.send(Frame::Body(ch, Bytes::copy_from_slice(piece)));
        }
    }

    /// A `basic.deliver` of `body` to consumer `tag`.
    pub(crate) fn deliver(&mut self, channel: u16, consumer: &'static str, tag: u64, body: &[u8]) {
        let deliver = BasicDeliver {
            consumer_tag: ShortStr::from_static(consumer),
            delivery_tag: DeliveryTag(tag),
            redelivered: false,
            exchange: ShortStr::new(),
            routing_key: ShortStr::from_static("q"),
        };
        self.send_content(channel, deliver, BasicProperties::default(), body, 131_064);
    }

    /// Every event queued so far.
    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Moves time on and fires the client's timer if it is due.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
            self.conn.handle_timeout(self.now);
        }
    }
}

/// `connection.start` as RabbitMQ 3.10 sends it (mechanisms PLAIN AMQPLAIN).
pub(crate) fn start() -> ConnectionStart {
    let mut props = FieldTable::new();
    props.insert("product", "RabbitMQ");
    props.insert("version", "3.10.8");
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: LongStr::from("PLAIN AMQPLAIN"),
        locales: LongStr::from("en_US"),
    }
}

pub(crate) const SECOND: Duration = Duration::from_secs(1);
