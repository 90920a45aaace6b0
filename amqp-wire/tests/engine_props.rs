//! Property tests of the connection engine, through the public API only.
//!
//! A small scripted peer plays the broker: it decodes every octet the engine writes (so the
//! engine never emits garbage), keeps the broker's view of each channel, and feeds frames in.
//!
//! - `arbitrary_octets_*`: after a valid handshake and an open channel, arbitrary octets (pure
//!   noise, or plausible frames with a few octets changed) cut into arbitrary chunks and
//!   interleaved with timeouts at arbitrary later instants. The engine never panics, and ends
//!   healthy, or closing/closed with a reply code that its one `connection.close` carries too.
//! - `broker_and_app_interleaved`: well-formed but arbitrary broker frames (deliveries cut into
//!   random body frames, get replies, confirms, returns, flow, closes, cancels, heartbeats,
//!   blocked, and a few out-of-sequence frames) interleaved with application commands and time.
//!   After every step: every reply answers the oldest request of its channel; confirms are
//!   exactly the ones the broker gave, each once, for tags `basic_publish` returned; bodies
//!   arrive as sent, once; acks succeed exactly for unsettled deliveries; the engine sends
//!   nothing on a channel or connection it may not use; any close it starts has a
//!   connection-error code.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use amqp_wire::connection::{
    ClientConfig, Confirmation, Connection, ConnectionError, Event, Initiator, RequestId, State,
    UsageError,
};
use amqp_wire::methods::*;
use amqp_wire::{
    BasicProperties, ChannelId, ContentHeader, DeliveryTag, FieldTable, Frame, FrameDecoder,
    LongStr, Method, ReplyCode, ShortStr, Transmit,
};
use bytes::{Buf, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// The codes of the connection errors a client may close with.
const HARD: [u16; 8] = [501, 502, 503, 504, 505, 506, 530, 540];

// ---------------------------------------------------------------------------------------------
// The wire: drives the engine as a transport does and decodes everything it writes
// ---------------------------------------------------------------------------------------------

struct Wire {
    conn: Connection,
    now: Duration,
    /// Server octets the engine left unconsumed (a partial frame).
    input: BytesMut,
    output: BytesMut,
    decoder: FrameDecoder,
    header_seen: bool,
}

fn method(channel: u16, m: impl Into<Method>) -> Frame {
    Frame::Method(ChannelId(channel), m.into())
}

fn s(text: &str) -> ShortStr {
    ShortStr::try_from(text).expect("short")
}

impl Wire {
    fn new(config: ClientConfig) -> Self {
        let now = Duration::ZERO;
        Self {
            conn: Connection::client(config, now),
            now,
            input: BytesMut::new(),
            output: BytesMut::new(),
            // The client must keep to the spec's minimum until tune-ok.
            decoder: FrameDecoder::new(4096),
            header_seen: false,
        }
    }

    /// A client that completed start, tune and open; nothing left to read.
    fn connected(config: ClientConfig, tune: ConnectionTune) -> Self {
        let mut w = Self::new(config);
        let start = ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::new(),
            mechanisms: LongStr::from("PLAIN AMQPLAIN"),
            locales: LongStr::from("en_US"),
        };
        w.send(&method(0, start));
        let (frames, _) = w.pump();
        assert!(matches!(
            &frames[..],
            [Frame::Method(_, Method::ConnectionStartOk(_))]
        ));
        w.send(&method(0, tune));
        let (frames, _) = w.pump();
        assert!(matches!(
            &frames[..],
            [
                Frame::Method(_, Method::ConnectionTuneOk(_)),
                Frame::Method(_, Method::ConnectionOpen(_))
            ]
        ));
        w.send(&method(0, ConnectionOpenOk));
        let (_, events) = w.pump();
        assert!(matches!(&events[..], [Event::Connected { .. }]));
        w
    }

    fn feed(&mut self, octets: &[u8]) {
        self.input.extend_from_slice(octets);
        self.conn.handle_input(self.now, &mut self.input);
    }

    fn send(&mut self, frame: &Frame) {
        let mut wire = BytesMut::new();
        frame.encode(&mut wire).expect("encodable");
        self.feed(&wire);
    }

    fn send_all(&mut self, frames: &[Frame]) {
        let mut wire = BytesMut::new();
        for frame in frames {
            frame.encode(&mut wire).expect("encodable");
        }
        self.feed(&wire);
    }

    /// Moves time on; fires the timer when due, or at once with `force`.
    fn advance(&mut self, by: Duration, force: bool) {
        self.now += by;
        if force || self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
            self.conn.handle_timeout(self.now);
        }
    }

    /// (D) after a (B) or (C) call: the frames written, all of which must decode, and the events.
    fn pump(&mut self) -> (Vec<Frame>, Vec<Event>) {
        let mut out = Transmit::new();
        let n = self.conn.poll_transmit(self.now, &mut out);
        assert_eq!(n, out.remaining());
        while out.has_remaining() {
            let chunk = out.chunk();
            self.output.extend_from_slice(chunk);
            let len = chunk.len();
            out.advance(len);
        }
        let mut frames = Vec::new();
        if !self.header_seen {
            if self.output.len() < 8 {
                return (frames, self.events());
            }
            assert_eq!(&self.output[..8], b"AMQP\x00\x00\x09\x01");
            self.output.advance(8);
            self.header_seen = true;
        }
        loop {
            match self.decoder.decode(&mut self.output) {
                Ok(Some(frame)) => {
                    if let Frame::Method(_, Method::ConnectionTuneOk(t)) = &frame {
                        self.decoder.set_max_frame_size(t.frame_max);
                    }
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => panic!("the engine wrote an undecodable frame: {e}"),
            }
        }
        assert!(self.output.is_empty(), "the engine wrote part of a frame");
        if self.conn.is_closed() {
            assert_eq!(
                self.conn.poll_timeout(),
                None,
                "a closed engine wants a timer"
            );
        }
        (frames, self.events())
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Property 1: arbitrary octets after the handshake
// ---------------------------------------------------------------------------------------------

/// Connected, channel 1 open in confirm mode with consumer `c`, three mandatory publishes
/// unconfirmed and a `basic.get` pending: plenty of state for the octets to hit.
fn fixture(heartbeat: u16) -> Wire {
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat,
    };
    let mut w = Wire::connected(ClientConfig::default(), tune);
    let id = w.conn.open_channel().expect("open");
    w.send(&method(id.0, ChannelOpenOk));
    let mut ch = w.conn.channel(id).expect("open channel");
    ch.call(ConfirmSelect { no_wait: true }).expect("select");
    let consume = BasicConsume {
        queue: s("q"),
        consumer_tag: s("c"),
        no_wait: true,
        ..Default::default()
    };
    ch.call(consume).expect("consume");
    for _ in 0..3 {
        let publish = BasicPublish {
            exchange: s("amq.direct"),
            routing_key: s("k"),
            mandatory: true,
            immediate: false,
        };
        let body = Bytes::from_static(b"hello");
        ch.basic_publish(publish, &BasicProperties::default(), body)
            .expect("publish");
    }
    ch.call(BasicGet {
        queue: s("q"),
        no_ack: false,
    })
    .expect("get");
    let _ = w.pump();
    w
}

/// Feeds `octets` in chunks as `cuts` says, each followed by a timeout at a later instant
/// (fired even when not due with `force`), then checks how the engine ended.
fn feed_octets(mut w: Wire, octets: &[u8], cuts: &[(usize, u32, bool)]) {
    // Agreed, not offered: a broker offering none still gets the client's.
    let heartbeat = w.conn.tune().heartbeat;
    let mut frames = Vec::new();
    let mut events = Vec::new();
    let mut rest = octets;
    for &(len, ms, force) in cuts.iter().chain(std::iter::once(&(usize::MAX, 0, false))) {
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        w.feed(chunk);
        let (f, e) = w.pump();
        frames.extend(f);
        events.extend(e);
        w.advance(Duration::from_millis(u64::from(ms)), force);
        let (f, e) = w.pump();
        frames.extend(f);
        events.extend(e);
    }
    check_outcome(&w, heartbeat, &frames, &events);

    // The socket closes now: the engine is over, and an earlier error stays.
    let before = w.conn.error().cloned();
    w.conn.handle_eof();
    let (f, e) = w.pump();
    assert!(f.is_empty(), "wrote after EOF: {f:?}");
    assert!(w.conn.is_closed());
    match before {
        Some(error) => {
            assert!(e.is_empty(), "a second error reported: {e:?}");
            assert_eq!(w.conn.error(), Some(&error), "the error is sticky");
        }
        None => assert!(
            matches!(&e[..], [Event::Closed(ConnectionError::UnexpectedEof)]),
            "{e:?}"
        ),
    }
    // Nothing more from this peer is read.
    w.feed(&[8, 0, 0, 0, 0, 0, 0, 0xce, 1, 2, 3]);
    assert_eq!(w.pump(), (Vec::new(), Vec::new()));
}

fn check_outcome(w: &Wire, heartbeat: u16, frames: &[Frame], events: &[Event]) {
    let closes: Vec<&ConnectionClose> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Method(ChannelId(0), Method::ConnectionClose(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert!(closes.len() <= 1, "connection.close sent twice: {closes:?}");
    let lost: Vec<&ConnectionError> = events
        .iter()
        .filter_map(|e| match e {
            Event::Closed(e) => Some(e),
            _ => None,
        })
        .collect();
    match w.conn.state() {
        State::Open => {
            assert_eq!(w.conn.error(), None);
            assert!(closes.is_empty() && lost.is_empty(), "{closes:?} {lost:?}");
        }
        State::Handshake => panic!("back in the handshake"),
        State::Closing | State::Closed => {
            let error = w.conn.error().expect("closing without an error");
            assert_eq!(lost, [error], "the error is reported once, as it stays");
            match error {
                ConnectionError::MissedHeartbeats(_) => assert_ne!(heartbeat, 0),
                _ => assert!(error.reply_code().is_some(), "no reply code: {error:?}"),
            }
            if matches!(
                error,
                ConnectionError::Protocol(_) | ConnectionError::Decode(_)
            ) {
                assert_eq!(closes.len(), 1, "the engine closed without saying so");
            }
            if let Some(close) = closes.first() {
                assert_eq!(Some(close.reply_code), error.reply_code(), "{error}");
                assert!(HARD.contains(&close.reply_code.0), "{close:?}");
            }
        }
    }
}

/// Chunk lengths, each with a time step and whether to fire the timer even if not due.
fn cuts() -> impl Strategy<Value = Vec<(usize, u32, bool)>> {
    let ms = prop_oneof![4 => 0u32..2_000, 1 => 0u32..200_000];
    vec((1usize..600, ms, any::<bool>()), 0..24)
}

/// One encoded frame (or the protocol header) a confused broker might plausibly send.
fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
    let ch = || prop_oneof![4 => Just(1u16), 1 => 0u16..4];
    let frames: BoxedStrategy<Vec<Frame>> = prop_oneof![
        Just(vec![Frame::Heartbeat]),
        (ch(), 0u64..6, vec(any::<u8>(), 0..40)).prop_map(|(ch, tag, body)| {
            let deliver = BasicDeliver {
                consumer_tag: s("c"),
                delivery_tag: DeliveryTag(tag),
                routing_key: s("k"),
                ..Default::default()
            };
            let header = ContentHeader {
                body_size: body.len() as u64,
                properties: BasicProperties::default(),
            };
            let mut frames = vec![method(ch, deliver), Frame::Header(ChannelId(ch), header)];
            if !body.is_empty() {
                frames.push(Frame::Body(ChannelId(ch), body.into()));
            }
            frames
        }),
        (ch(), 0u64..6, any::<bool>(), any::<bool>()).prop_map(|(ch, tag, multiple, ack)| {
            let delivery_tag = DeliveryTag(tag);
            vec![if ack {
                method(
                    ch,
                    BasicAck {
                        delivery_tag,
                        multiple,
                    },
                )
            } else {
                method(
                    ch,
                    BasicNack {
                        delivery_tag,
                        multiple,
                        requeue: false,
                    },
                )
            }]
        }),
        (ch(), 0u64..64).prop_map(|(ch, size)| {
            let header = ContentHeader {
                body_size: size,
                properties: BasicProperties::default(),
            };
            vec![Frame::Header(ChannelId(ch.max(1)), header)]
        }),
        (ch(), vec(any::<u8>(), 1..30))
            .prop_map(|(ch, b)| vec![Frame::Body(ChannelId(ch.max(1)), b.into())]),
        (ch(), 0usize..9).prop_map(|(ch, which)| {
            let m: Method = match which {
                0 => ChannelFlow { active: false }.into(),
                1 => ChannelClose {
                    reply_code: ReplyCode(404),
                    reply_text: s("NOT_FOUND"),
                    class_id: 50,
                    method_id: 10,
                }
                .into(),
                2 => BasicGetEmpty.into(),
                3 => QueueDeclareOk::default().into(),
                4 => ConnectionBlocked { reason: s("low") }.into(),
                5 => ConnectionUnblocked.into(),
                6 => BasicCancel {
                    consumer_tag: s("c"),
                    no_wait: true,
                }
                .into(),
                7 => ChannelCloseOk.into(),
                _ => ConnectionClose {
                    reply_code: ReplyCode(320),
                    reply_text: s("CONNECTION_FORCED"),
                    class_id: 0,
                    method_id: 0,
                }
                .into(),
            };
            vec![method(ch, m)]
        }),
    ]
    .boxed();
    prop_oneof![
        20 => frames.prop_map(|frames| {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire).expect("encodable");
            }
            wire.to_vec()
        }),
        1 => Just(b"AMQP\x00\x00\x09\x01".to_vec()),
    ]
}

/// Plausible frames back to back, then a few octets changed.
fn mutated_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(plausible_frame(), 1..12),
        vec((any::<Index>(), 1u8..=255), 0..4),
    )
        .prop_map(|(frames, flips)| {
            let mut octets = frames.concat();
            for (at, xor) in flips {
                let i = at.index(octets.len());
                octets[i] ^= xor;
            }
            octets
        })
}

fn heartbeat() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), Just(1), Just(60)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_octets_never_break_the_engine(
        heartbeat in heartbeat(),
        octets in vec(any::<u8>(), 0..4096),
        cuts in cuts(),
    ) {
        feed_octets(fixture(heartbeat), &octets, &cuts);
    }

    #[test]
    fn arbitrary_octets_near_valid_frames_never_break_the_engine(
        heartbeat in heartbeat(),
        octets in mutated_stream(),
        cuts in cuts(),
    ) {
        feed_octets(fixture(heartbeat), &octets, &cuts);
    }
}

// ---------------------------------------------------------------------------------------------
// Property 2: well-formed broker frames and application commands, interleaved
// ---------------------------------------------------------------------------------------------

/// A content the broker sends: its body length and how its body frames are cut.
#[derive(Clone, Debug)]
struct Content {
    len: usize,
    cuts: Vec<usize>,
}

fn content() -> impl Strategy<Value = Content> {
    (
        prop_oneof![1 => Just(0usize), 6 => 1usize..600],
        vec(1usize..200, 0..5),
    )
        .prop_map(|(len, cuts)| Content { len, cuts })
}

#[derive(Clone, Debug)]
enum Step {
    // The broker.
    Reply {
        pick: usize,
        empty: bool,
        content: Content,
    },
    Deliver {
        pick: usize,
        consumer: usize,
        content: Content,
    },
    DeliverTwo {
        pick: usize,
        other: usize,
        a: Content,
        b: Content,
    },
    Confirm {
        pick: usize,
        tag: usize,
        multiple: bool,
        ack: bool,
    },
    BogusConfirm {
        pick: usize,
        stale: bool,
        multiple: bool,
        ack: bool,
    },
    Return {
        pick: usize,
        which: usize,
        content: Content,
    },
    LooseReturn {
        pick: usize,
        content: Content,
    },
    Flow {
        pick: usize,
        active: bool,
    },
    BrokerCloseChannel {
        pick: usize,
        code: usize,
    },
    BrokerCancel {
        pick: usize,
        consumer: usize,
        no_wait: bool,
    },
    Heartbeat,
    Blocked(bool),
    Stray {
        pick: usize,
        kind: usize,
        absent: bool,
    },
    BrokerCloseConnection,
    Eof,
    // The application.
    Open,
    Publish {
        pick: usize,
        mandatory: bool,
        route: usize,
        len: usize,
    },
    Select {
        pick: usize,
        no_wait: bool,
    },
    Settle {
        pick: usize,
        tag: usize,
        multiple: bool,
        how: usize,
    },
    Call {
        pick: usize,
        what: usize,
        tag: usize,
        flag: bool,
    },
    CloseChannel {
        pick: usize,
    },
    CloseConnection,
    Advance {
        ms: u32,
        force: bool,
    },
}

/// A step that leaves the connection open (unless the engine finds a fault).
fn body_step() -> impl Strategy<Value = Step> {
    let p = any::<usize>;
    let b = any::<bool>;
    let publish_len = prop_oneof![3 => 0usize..300, 1 => 0usize..10_000];
    let ms = prop_oneof![8 => 0u32..1_500, 1 => 0u32..300_000];
    prop_oneof![
        14 => (p(), b(), content())
            .prop_map(|(pick, empty, content)| Step::Reply { pick, empty, content }),
        6 => (p(), p(), content())
            .prop_map(|(pick, consumer, content)| Step::Deliver { pick, consumer, content }),
        2 => (p(), p(), content(), content())
            .prop_map(|(pick, other, a, b)| Step::DeliverTwo { pick, other, a, b }),
        8 => (p(), p(), b(), b())
            .prop_map(|(pick, tag, multiple, ack)| Step::Confirm { pick, tag, multiple, ack }),
        1 => (p(), b(), b(), b()).prop_map(|(pick, stale, multiple, ack)| {
            Step::BogusConfirm { pick, stale, multiple, ack }
        }),
        3 => (p(), p(), content())
            .prop_map(|(pick, which, content)| Step::Return { pick, which, content }),
        1 => (p(), content()).prop_map(|(pick, content)| Step::LooseReturn { pick, content }),
        1 => (p(), b()).prop_map(|(pick, active)| Step::Flow { pick, active }),
        1 => (p(), p()).prop_map(|(pick, code)| Step::BrokerCloseChannel { pick, code }),
        1 => (p(), p(), b()).prop_map(|(pick, consumer, no_wait)| {
            Step::BrokerCancel { pick, consumer, no_wait }
        }),
        2 => Just(Step::Heartbeat),
        1 => b().prop_map(Step::Blocked),
        3 => Just(Step::Open),
        10 => (p(), b(), p(), publish_len).prop_map(|(pick, mandatory, route, len)| {
            Step::Publish { pick, mandatory, route, len }
        }),
        2 => (p(), b()).prop_map(|(pick, no_wait)| Step::Select { pick, no_wait }),
        6 => (p(), p(), b(), p())
            .prop_map(|(pick, tag, multiple, how)| Step::Settle { pick, tag, multiple, how }),
        8 => (p(), p(), p(), b())
            .prop_map(|(pick, what, tag, flag)| Step::Call { pick, what, tag, flag }),
        1 => p().prop_map(|pick| Step::CloseChannel { pick }),
        3 => (ms, b()).prop_map(|(ms, force)| Step::Advance { ms, force }),
    ]
}

/// A step after which the connection ends, or should: frames in flight may still follow.
fn ending_step() -> impl Strategy<Value = Step> {
    let p = any::<usize>;
    prop_oneof![
        (p(), p(), any::<bool>()).prop_map(|(pick, kind, absent)| Step::Stray {
            pick,
            kind,
            absent
        }),
        Just(Step::BrokerCloseConnection),
        Just(Step::Eof),
        Just(Step::CloseConnection),
    ]
}

/// Two open channels, the first in confirm mode, each with a consumer.
fn prologue() -> Vec<Step> {
    let reply = || Step::Reply {
        pick: 0,
        empty: true,
        content: Content {
            len: 0,
            cuts: Vec::new(),
        },
    };
    let consume = |pick, tag| Step::Call {
        pick,
        what: 1,
        tag,
        flag: false,
    };
    vec![
        Step::Open,
        Step::Open,
        reply(),
        reply(),
        Step::Select {
            pick: 0,
            no_wait: false,
        },
        reply(),
        consume(0, 1),
        consume(1, 0),
        reply(),
        reply(),
    ]
}

fn pick<T: Copy>(items: &[T], n: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[n % items.len()])
}

const ROUTES: [&str; 2] = ["a", "b"];
const TAGS: [&str; 3] = ["", "c1", "c2"];

/// A publish awaiting its confirm, as the broker sees it.
#[derive(Debug)]
struct Unconfirmed {
    /// The routing key of a mandatory publish.
    route: Option<ShortStr>,
    /// The message id of the return sent for it.
    returned: Option<ShortStr>,
}

/// The broker's view of one channel.
#[derive(Debug, Default)]
struct BrokerChannel {
    /// open-ok sent.
    open: bool,
    /// The client's requests awaiting a reply, oldest first.
    requests: VecDeque<Method>,
    /// The broker sent channel.close and awaits close-ok.
    closing: bool,
    /// The client sent channel.close.
    client_closing: bool,
    confirm: bool,
    next_seq: u64,
    unconfirmed: BTreeMap<u64, Unconfirmed>,
    consumers: Vec<ShortStr>,
    next_tag: u64,
    /// cancel-ok owed for a broker basic.cancel without nowait.
    cancel_oks: usize,
    /// The client's publish in progress: header awaited, body octets still to come.
    await_header: bool,
    body_left: u64,
}

/// The application's view of one channel, which predicts what the engine answers.
#[derive(Debug, Default)]
struct AppChannel {
    opened: bool,
    closing: bool,
    requests: VecDeque<(RequestId, Req)>,
    /// Registered consumers and their `no_ack`.
    consumers: HashMap<ShortStr, bool>,
    confirm: bool,
    next_publish: u64,
    unconfirmed: BTreeSet<u64>,
    unacked: BTreeSet<u64>,
    paused: bool,
}

#[derive(Debug)]
enum Req {
    Consume { tag: ShortStr, no_ack: bool },
    Cancel,
    Get { no_ack: bool },
    Other(&'static [(u16, u16)]),
}

/// What a confirm event must say.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ack,
    Nack,
    Returned(ShortStr),
}

/// A description of an event, and a test for it.
type EventCheck = (String, Box<dyn Fn(&Event) -> bool>);

/// What the engine must do in reply to one step.
#[derive(Default)]
struct Expect {
    confirms: Vec<(u16, u64, Outcome)>,
    /// Event descriptions, each of which some event of the step must match.
    events: Vec<EventCheck>,
    /// Event descriptions no event of the step may match.
    forbidden: Vec<EventCheck>,
    /// The client must send connection.close with this code.
    connection_close: Option<u16>,
    /// The client must send channel.close with this code on these channels.
    channel_closes: Vec<(u16, u16)>,
}

impl Expect {
    fn event(&mut self, what: String, f: impl Fn(&Event) -> bool + 'static) {
        self.events.push((what, Box::new(f)));
    }

    fn forbid(&mut self, what: String, f: impl Fn(&Event) -> bool + 'static) {
        self.forbidden.push((what, Box::new(f)));
    }
}

struct Run {
    w: Wire,
    channel_max: u16,
    heartbeat: u16,
    max_message_size: u64,
    /// Channels the broker sent a message over `max_message_size` on, in this step.
    oversized: Vec<u16>,
    // The broker.
    channels: BTreeMap<u16, BrokerChannel>,
    /// The client's connection.close, once sent.
    client_close: Option<ConnectionClose>,
    /// The broker sent connection.close.
    broker_closing: bool,
    /// The connection is over for the broker (close-ok exchanged, or EOF).
    done: bool,
    ctag: u64,
    /// Contents sent, by message id: channel and body. Removed when reported.
    contents: HashMap<ShortStr, (u16, Bytes)>,
    next_id: u64,
    // The application.
    app: BTreeMap<u16, AppChannel>,
    app_open: bool,
    app_closed_connection: bool,
    error: Option<ConnectionError>,
    eof: bool,
    // Per step, as the broker read it.
    step_closes: Vec<(u16, u16)>,
}

impl Run {
    fn new(channel_max: u16, frame_max: u32, heartbeat: u16, max_message_size: u64) -> Self {
        let tune = ConnectionTune {
            channel_max,
            frame_max,
            heartbeat,
        };
        let config = ClientConfig {
            max_message_size,
            ..ClientConfig::default()
        };
        let w = Wire::connected(config, tune);
        Self {
            // Agreed, not offered: a broker offering none still gets the client's.
            heartbeat: w.conn.tune().heartbeat,
            w,
            channel_max,
            max_message_size,
            oversized: Vec::new(),
            channels: BTreeMap::new(),
            client_close: None,
            broker_closing: false,
            done: false,
            ctag: 0,
            contents: HashMap::new(),
            next_id: 0,
            app: BTreeMap::new(),
            app_open: true,
            app_closed_connection: false,
            error: None,
            eof: false,
            step_closes: Vec::new(),
        }
    }

    /// The engine cares about what the broker sends on the connection.
    fn listening(&self) -> bool {
        self.w.conn.state() == State::Open && !self.broker_closing
    }

    /// Channels the broker may send on: open-ok sent, no close of its own sent.
    fn usable(&self) -> Vec<u16> {
        self.channels
            .iter()
            .filter(|(_, c)| c.open && !c.closing)
            .map(|(&n, _)| n)
            .collect()
    }

    /// True when the engine will act on frames for channel `n` (it did not close it).
    fn engine_listens(&self, n: u16) -> bool {
        self.listening() && self.channels.get(&n).is_some_and(|c| !c.client_closing)
    }

    /// A content with a fresh message id: its header and its body frames.
    fn content(&mut self, channel: u16, c: &Content) -> Vec<Frame> {
        if c.len as u64 > self.max_message_size && self.engine_listens(channel) {
            self.oversized.push(channel);
        }
        self.next_id += 1;
        let id = s(&format!("m{}", self.next_id));
        let body: Bytes = (0..c.len)
            .map(|i| (i as u64 * 7 + self.next_id) as u8)
            .collect::<Vec<u8>>()
            .into();
        self.contents.insert(id.clone(), (channel, body.clone()));
        let ch = ChannelId(channel);
        let header = ContentHeader {
            body_size: c.len as u64,
            properties: BasicProperties {
                message_id: Some(id),
                ..Default::default()
            },
        };
        let mut frames = vec![Frame::Header(ch, header)];
        let mut at = 0;
        for &cut in c.cuts.iter().chain(std::iter::once(&usize::MAX)) {
            if at == body.len() {
                break;
            }
            let end = body.len().min(at.saturating_add(cut));
            frames.push(Frame::Body(ch, body.slice(at..end)));
            at = end;
        }
        frames
    }

    /// A content's message must be one the broker sent on this channel, with its body; once.
    fn check_content(&mut self, channel: u16, props: &BasicProperties, body: &Bytes) {
        let id = props.message_id.as_ref().expect("message id kept");
        let (sent_on, sent) = self
            .contents
            .remove(id)
            .unwrap_or_else(|| panic!("{id:?} reported twice or never sent"));
        assert_eq!(sent_on, channel, "{id:?} reported on another channel");
        assert_eq!(body, &sent, "body of {id:?}");
    }

    // ----- the broker -----

    fn broker(&mut self, step: &Step, x: &mut Expect) {
        if self.done {
            return;
        }
        let usable = self.usable();
        let mut frames = Vec::new();
        match step {
            Step::Reply {
                pick: n,
                empty,
                content,
            } => {
                let mut waiting: Vec<u16> = self
                    .channels
                    .iter()
                    .filter(|(_, c)| {
                        c.requests
                            .front()
                            .is_some_and(|m| !c.closing || matches!(m, Method::ChannelClose(_)))
                    })
                    .map(|(&n, _)| n)
                    .collect();
                if self.client_close.is_some() {
                    waiting.push(0);
                }
                let Some(ch) = pick(&waiting, *n) else { return };
                if ch == 0 {
                    frames.push(method(0, ConnectionCloseOk));
                    self.done = true;
                } else {
                    self.reply(ch, *empty, content, &mut frames);
                }
            }
            Step::Deliver {
                pick: n,
                consumer,
                content,
            } => {
                let with: Vec<u16> = usable
                    .iter()
                    .copied()
                    .filter(|n| !self.channels[n].consumers.is_empty())
                    .collect();
                let Some(ch) = pick(&with, *n) else { return };
                frames = self.deliver(ch, *consumer, content);
            }
            Step::DeliverTwo {
                pick: n,
                other,
                a,
                b,
            } => {
                let with: Vec<u16> = usable
                    .iter()
                    .copied()
                    .filter(|n| !self.channels[n].consumers.is_empty())
                    .collect();
                let (Some(c1), Some(c2)) = (pick(&with, *n), pick(&with, *other)) else {
                    return;
                };
                if c1 == c2 {
                    return;
                }
                let fa = self.deliver(c1, 0, a);
                let fb = self.deliver(c2, 1, b);
                // Frames of the two channels alternate; each channel's stay in order.
                let (mut ia, mut ib) = (fa.into_iter(), fb.into_iter());
                loop {
                    match (ia.next(), ib.next()) {
                        (None, None) => break,
                        (fa, fb) => frames.extend(fa.into_iter().chain(fb)),
                    }
                }
            }
            Step::Confirm {
                pick: n,
                tag,
                multiple,
                ack,
            } => {
                let with: Vec<u16> = usable
                    .iter()
                    .copied()
                    .filter(|n| !self.channels[n].unconfirmed.is_empty())
                    .collect();
                let Some(ch) = pick(&with, *n) else { return };
                let listens = self.engine_listens(ch);
                let c = self.channels.get_mut(&ch).expect("channel");
                let tags: Vec<u64> = c.unconfirmed.keys().copied().collect();
                let tag = tags[tag % tags.len()];
                let settled: Vec<u64> = if *multiple {
                    tags.into_iter().filter(|&t| t <= tag).collect()
                } else {
                    vec![tag]
                };
                for t in settled {
                    let u = c.unconfirmed.remove(&t).expect("unconfirmed");
                    let outcome = match (ack, u.returned) {
                        (false, _) => Outcome::Nack,
                        (true, None) => Outcome::Ack,
                        (true, Some(id)) => Outcome::Returned(id),
                    };
                    if listens {
                        x.confirms.push((ch, t, outcome));
                    }
                }
                let delivery_tag = DeliveryTag(tag);
                let multiple = *multiple;
                frames.push(if *ack {
                    method(
                        ch,
                        BasicAck {
                            delivery_tag,
                            multiple,
                        },
                    )
                } else {
                    method(
                        ch,
                        BasicNack {
                            delivery_tag,
                            multiple,
                            requeue: false,
                        },
                    )
                });
            }
            Step::BogusConfirm {
                pick: n,
                stale,
                multiple,
                ack,
            } => {
                let Some(ch) = pick(&usable, *n) else { return };
                let c = &self.channels[&ch];
                let settled = (1..c.next_seq).find(|t| !c.unconfirmed.contains_key(t));
                let (tag, multiple) = match settled {
                    Some(t) if *stale => (t, false),
                    _ => (c.next_seq.max(1) + 1, *multiple),
                };
                if self.engine_listens(ch) {
                    x.channel_closes.push((ch, 406));
                }
                let delivery_tag = DeliveryTag(tag);
                frames.push(if *ack {
                    method(
                        ch,
                        BasicAck {
                            delivery_tag,
                            multiple,
                        },
                    )
                } else {
                    method(
                        ch,
                        BasicNack {
                            delivery_tag,
                            multiple,
                            requeue: true,
                        },
                    )
                });
            }
            Step::Return {
                pick: n,
                which,
                content,
            } => {
                // RabbitMQ returns an unroutable publish before it confirms it, and handles
                // publishes in order: only the oldest unreturned one of a route can be next.
                let mut candidates = Vec::new();
                for &ch in &usable {
                    let mut seen = Vec::new();
                    for (&seq, u) in &self.channels[&ch].unconfirmed {
                        if let (Some(route), None) = (&u.route, &u.returned) {
                            if !seen.contains(route) {
                                seen.push(route.clone());
                                candidates.push((ch, seq));
                            }
                        }
                    }
                }
                let Some((ch, seq)) = pick(&candidates, n.wrapping_add(*which)) else {
                    return;
                };
                let route = self.channels[&ch].unconfirmed[&seq].route.clone();
                let returned = BasicReturn {
                    reply_code: ReplyCode::NO_ROUTE,
                    reply_text: s("NO_ROUTE"),
                    exchange: s("amq.direct"),
                    routing_key: route.expect("mandatory"),
                };
                frames.push(method(ch, returned));
                let content = self.content(ch, content);
                let Frame::Header(_, header) = &content[0] else {
                    unreachable!()
                };
                let id = header.properties.message_id.clone();
                frames.extend(content);
                let c = self.channels.get_mut(&ch).expect("channel");
                c.unconfirmed.get_mut(&seq).expect("unconfirmed").returned = id;
                if self.engine_listens(ch) {
                    // Kept for the confirm: no event of its own.
                    x.forbid(
                        format!("a return event on {ch}"),
                        move |e| matches!(e, Event::Returned { channel, .. } if channel.0 == ch),
                    );
                }
            }
            Step::LooseReturn { pick: n, content } => {
                let Some(ch) = pick(&usable, *n) else { return };
                let returned = BasicReturn {
                    reply_code: ReplyCode::NO_ROUTE,
                    reply_text: s("NO_ROUTE"),
                    exchange: s("amq.direct"),
                    routing_key: s("nowhere"),
                };
                frames.push(method(ch, returned));
                frames.extend(self.content(ch, content));
                if self.engine_listens(ch) && !self.oversized.contains(&ch) {
                    x.event(format!("a return on {ch}"), move |e| {
                        matches!(e, Event::Returned { channel, message }
                            if channel.0 == ch && message.routing_key == "nowhere")
                    });
                }
            }
            Step::Flow { pick: n, active } => {
                let Some(ch) = pick(&usable, *n) else { return };
                frames.push(method(ch, ChannelFlow { active: *active }));
                if self.engine_listens(ch) {
                    let want = *active;
                    x.event(format!("flow {want} on {ch}"), move |e| {
                        matches!(e, Event::Flow { channel, active }
                            if channel.0 == ch && *active == want)
                    });
                }
            }
            Step::BrokerCloseChannel { pick: n, code } => {
                let Some(ch) = pick(&usable, *n) else { return };
                let code = [403u16, 404, 405, 406][code % 4];
                frames.push(method(
                    ch,
                    ChannelClose {
                        reply_code: ReplyCode(code),
                        reply_text: s("closed by the broker"),
                        class_id: 50,
                        method_id: 10,
                    },
                ));
                let c = self.channels.get_mut(&ch).expect("channel");
                c.closing = true;
                c.requests.clear();
                c.unconfirmed.clear();
                if self.engine_listens(ch) {
                    x.event(format!("channel {ch} closed with {code}"), move |e| {
                        matches!(e, Event::ChannelClosed { channel, reason }
                            if channel.0 == ch && reason.code.0 == code
                                && reason.initiator == Initiator::Peer)
                    });
                }
            }
            Step::BrokerCancel {
                pick: n,
                consumer,
                no_wait,
            } => {
                let with: Vec<u16> = usable
                    .iter()
                    .copied()
                    .filter(|n| !self.channels[n].consumers.is_empty())
                    .collect();
                let Some(ch) = pick(&with, *n) else { return };
                let listens = self.engine_listens(ch);
                let c = self.channels.get_mut(&ch).expect("channel");
                let tag = c.consumers.remove(consumer % c.consumers.len());
                if listens {
                    c.cancel_oks += usize::from(!*no_wait);
                    let want = tag.clone();
                    x.event(format!("consumer {tag:?} cancelled"), move |e| {
                        matches!(e, Event::ConsumerCancelled { channel, consumer_tag }
                            if channel.0 == ch && *consumer_tag == want)
                    });
                }
                frames.push(method(
                    ch,
                    BasicCancel {
                        consumer_tag: tag,
                        no_wait: *no_wait,
                    },
                ));
            }
            Step::Heartbeat => frames.push(Frame::Heartbeat),
            Step::Blocked(blocked) => {
                if *blocked {
                    frames.push(method(
                        0,
                        ConnectionBlocked {
                            reason: s("low on memory"),
                        },
                    ));
                    if self.listening() {
                        x.event("blocked".into(), |e| matches!(e, Event::Blocked { .. }));
                    }
                } else {
                    frames.push(method(0, ConnectionUnblocked));
                    if self.listening() {
                        x.event("unblocked".into(), |e| matches!(e, Event::Unblocked));
                    }
                }
            }
            Step::Stray {
                pick: n,
                kind,
                absent,
            } => {
                let (ch, code) = if *absent {
                    let free: Vec<u16> =
                        (1..=8).filter(|n| !self.channels.contains_key(n)).collect();
                    let Some(ch) = pick(&free, *n) else { return };
                    (ch, 504)
                } else {
                    let live: Vec<u16> = usable
                        .iter()
                        .copied()
                        .filter(|&n| self.engine_listens(n))
                        .collect();
                    let Some(ch) = pick(&live, *n) else { return };
                    (ch, 505)
                };
                let id = ChannelId(ch);
                let frame = match kind % 3 {
                    0 => Frame::Header(id, ContentHeader::default()),
                    1 => Frame::Body(id, Bytes::from_static(b"stray")),
                    _ => {
                        let front = self
                            .channels
                            .get(&ch)
                            .and_then(|c| c.requests.front())
                            .map_or(&[][..], Method::replies);
                        let oks: Vec<Method> = vec![
                            ChannelOpenOk.into(),
                            ChannelCloseOk.into(),
                            QueueDeclareOk::default().into(),
                            BasicQosOk.into(),
                            BasicConsumeOk {
                                consumer_tag: s("zz"),
                            }
                            .into(),
                            BasicCancelOk {
                                consumer_tag: s("zz"),
                            }
                            .into(),
                            ConfirmSelectOk.into(),
                            ChannelFlowOk { active: true }.into(),
                            BasicRecoverOk.into(),
                            BasicGetEmpty.into(),
                        ];
                        let oks: Vec<Method> = oks
                            .into_iter()
                            .filter(|m| !front.contains(&m.id()))
                            .collect();
                        Frame::Method(id, oks[kind / 3 % oks.len()].clone())
                    }
                };
                frames.push(frame);
                if self.listening() {
                    x.connection_close = Some(code);
                }
            }
            Step::BrokerCloseConnection => {
                if self.broker_closing {
                    return;
                }
                self.broker_closing = true;
                frames.push(method(
                    0,
                    ConnectionClose {
                        reply_code: ReplyCode::CONNECTION_FORCED,
                        reply_text: s("CONNECTION_FORCED - shutdown"),
                        class_id: 0,
                        method_id: 0,
                    },
                ));
            }
            Step::Eof => {
                self.w.conn.handle_eof();
                self.done = true;
                self.eof = true;
                return;
            }
            _ => return,
        }
        if !frames.is_empty() {
            self.w.send_all(&frames);
        }
    }

    /// Answers the oldest request on channel `ch` as RabbitMQ would.
    fn reply(&mut self, ch: u16, empty: bool, content: &Content, frames: &mut Vec<Frame>) {
        let c = self.channels.get_mut(&ch).expect("channel");
        let request = c.requests.pop_front().expect("a request");
        let reply: Method = match request {
            Method::ChannelOpen(_) => {
                c.open = true;
                ChannelOpenOk.into()
            }
            Method::ChannelClose(_) => {
                self.channels.remove(&ch);
                frames.push(method(ch, ChannelCloseOk));
                return;
            }
            Method::ChannelFlow(f) => ChannelFlowOk { active: f.active }.into(),
            Method::QueueDeclare(q) => QueueDeclareOk {
                queue: q.queue,
                message_count: 1,
                consumer_count: 0,
            }
            .into(),
            Method::BasicQos(_) => BasicQosOk.into(),
            Method::BasicRecover(_) => BasicRecoverOk.into(),
            Method::ConfirmSelect(_) => ConfirmSelectOk.into(),
            Method::BasicConsume(m) => {
                let consumer_tag = if m.consumer_tag.is_empty() {
                    self.ctag += 1;
                    s(&format!("amq.ctag-{}", self.ctag))
                } else {
                    m.consumer_tag
                };
                c.consumers.push(consumer_tag.clone());
                BasicConsumeOk { consumer_tag }.into()
            }
            Method::BasicCancel(m) => {
                c.consumers.retain(|t| *t != m.consumer_tag);
                BasicCancelOk {
                    consumer_tag: m.consumer_tag,
                }
                .into()
            }
            Method::BasicGet(_) if empty => BasicGetEmpty.into(),
            Method::BasicGet(_) => {
                c.next_tag += 1;
                let get_ok = BasicGetOk {
                    delivery_tag: DeliveryTag(c.next_tag),
                    routing_key: s("q"),
                    ..Default::default()
                };
                frames.push(method(ch, get_ok));
                let content = self.content(ch, content);
                frames.extend(content);
                return;
            }
            other => panic!("no reply scripted for {}", other.name()),
        };
        frames.push(method(ch, reply));
    }

    fn deliver(&mut self, ch: u16, consumer: usize, content: &Content) -> Vec<Frame> {
        let c = self.channels.get_mut(&ch).expect("channel");
        c.next_tag += 1;
        let deliver = BasicDeliver {
            consumer_tag: c.consumers[consumer % c.consumers.len()].clone(),
            delivery_tag: DeliveryTag(c.next_tag),
            redelivered: false,
            exchange: s("amq.direct"),
            routing_key: s("q"),
        };
        let mut frames = vec![method(ch, deliver)];
        frames.extend(self.content(ch, content));
        frames
    }

    /// Reads one frame the client sent, checking it may send it now.
    fn observe(&mut self, frame: &Frame) {
        assert!(!self.done, "wrote after the connection was over: {frame:?}");
        if self.client_close.is_some() {
            assert!(
                matches!(
                    frame,
                    Frame::Heartbeat | Frame::Method(_, Method::ConnectionCloseOk(_))
                ),
                "sent {frame:?} after connection.close"
            );
        }
        let (n, m) = match frame {
            Frame::Heartbeat => return,
            Frame::Method(ChannelId(0), m) => {
                match m {
                    Method::ConnectionClose(c) => {
                        self.step_closes.push((0, c.reply_code.0));
                        self.client_close = Some(c.clone());
                    }
                    Method::ConnectionCloseOk(_) => {
                        assert!(self.broker_closing, "close-ok nobody asked for");
                        self.done = true;
                    }
                    other => panic!("sent {} on channel 0", other.name()),
                }
                return;
            }
            Frame::Method(ChannelId(n), Method::ChannelOpen(_)) => {
                assert!(
                    !self.channels.contains_key(n),
                    "channel {n} reused before its close-ok"
                );
                assert!(*n <= self.channel_max || self.channel_max == 0);
                let c = BrokerChannel {
                    requests: [ChannelOpen.into()].into(),
                    next_seq: 1,
                    ..Default::default()
                };
                self.channels.insert(*n, c);
                return;
            }
            Frame::Method(ChannelId(n), m) => (*n, m),
            Frame::Header(ChannelId(n), h) => {
                let c = self
                    .channels
                    .get_mut(n)
                    .expect("header on a closed channel");
                assert!(c.await_header, "header without a publish on {n}");
                c.await_header = false;
                c.body_left = h.body_size;
                return;
            }
            Frame::Body(ChannelId(n), b) => {
                let c = self.channels.get_mut(n).expect("body on a closed channel");
                assert!(!c.await_header && !b.is_empty() && b.len() as u64 <= c.body_left);
                c.body_left -= b.len() as u64;
                return;
            }
        };
        let c = self
            .channels
            .get_mut(&n)
            .unwrap_or_else(|| panic!("sent {} on channel {n}, which is not open", m.name()));
        assert!(
            !c.await_header && c.body_left == 0,
            "{} inside a publish",
            m.name()
        );
        assert!(c.open, "sent {} on {n} before open-ok", m.name());
        if c.client_closing {
            assert!(
                matches!(m, Method::ChannelCloseOk(_)),
                "sent {} on {n} after its channel.close",
                m.name()
            );
        }
        match m {
            Method::ChannelClose(close) => {
                self.step_closes.push((n, close.reply_code.0));
                c.client_closing = true;
                c.requests.push_back(m.clone());
            }
            Method::ChannelCloseOk(_) => {
                assert!(c.closing, "channel.close-ok nobody asked for on {n}");
                c.closing = false;
                if !c.client_closing {
                    self.channels.remove(&n);
                }
            }
            Method::ConfirmSelect(select) => {
                c.confirm = true;
                if !select.no_wait {
                    c.requests.push_back(m.clone());
                }
            }
            Method::BasicPublish(p) => {
                if c.confirm {
                    let route = p.mandatory.then(|| p.routing_key.clone());
                    let u = Unconfirmed {
                        route,
                        returned: None,
                    };
                    c.unconfirmed.insert(c.next_seq, u);
                    c.next_seq += 1;
                }
                c.await_header = true;
            }
            Method::BasicConsume(consume) => {
                let tag = &consume.consumer_tag;
                let pending = c.requests.iter().any(
                    |r| matches!(r, Method::BasicConsume(other) if other.consumer_tag == *tag),
                );
                assert!(
                    tag.is_empty() || !(c.consumers.contains(tag) || pending),
                    "consumer tag {tag:?} reused on {n}: RabbitMQ closes the connection (530)"
                );
                if consume.no_wait {
                    c.consumers.push(tag.clone());
                } else {
                    c.requests.push_back(m.clone());
                }
            }
            Method::BasicCancel(cancel) if cancel.no_wait => {
                c.consumers.retain(|t| *t != cancel.consumer_tag);
            }
            Method::BasicCancelOk(_) => {
                assert!(c.cancel_oks > 0, "cancel-ok for a nowait basic.cancel");
                c.cancel_oks -= 1;
            }
            Method::ChannelFlowOk(_)
            | Method::BasicAck(_)
            | Method::BasicNack(_)
            | Method::BasicReject(_) => {}
            m if m.replies().is_empty() => {}
            m => c.requests.push_back(m.clone()),
        }
    }

    // ----- the application -----

    /// The app's channels, and one number it never opened.
    fn app_pick(&self, n: usize) -> u16 {
        let mut ids: Vec<u16> = self.app.keys().copied().collect();
        ids.push(9);
        ids[n % ids.len()]
    }

    /// The channel, when the model says the engine gives it; the engine must agree.
    fn app_channel(&mut self, id: u16) -> Option<amqp_wire::connection::Channel<'_>> {
        let want = match self.app.get(&id) {
            _ if !self.app_open => Err("ConnectionNotOpen"),
            Some(c) if c.opened && !c.closing => Ok(()),
            Some(c) if c.closing => Err("ChannelClosed"),
            _ => Err("ChannelNotOpen"),
        };
        match (want, self.w.conn.channel(ChannelId(id))) {
            (Ok(()), Ok(ch)) => Some(ch),
            (Err(want), Err(got)) => {
                let ok = matches!(
                    (want, &got),
                    ("ConnectionNotOpen", UsageError::ConnectionNotOpen)
                        | ("ChannelClosed", UsageError::ChannelClosed { .. })
                        | ("ChannelNotOpen", UsageError::ChannelNotOpen(_))
                );
                assert!(ok, "channel({id}): expected {want}, got {got:?}");
                None
            }
            (want, got) => panic!("channel({id}): expected {want:?}, got {got:?}"),
        }
    }

    fn app(&mut self, step: &Step) {
        match step {
            Step::Open => {
                let max = if self.channel_max == 0 {
                    u16::MAX
                } else {
                    self.channel_max
                };
                let free = (1..=max).find(|n| !self.app.contains_key(n));
                match (self.app_open, free, self.w.conn.open_channel()) {
                    (false, _, Err(UsageError::ConnectionNotOpen)) => {}
                    (true, None, Err(UsageError::ChannelsExhausted(_))) => {}
                    (true, Some(n), Ok(id)) => {
                        assert_eq!(id.0, n, "not the lowest free number");
                        self.app.insert(n, AppChannel::default());
                    }
                    (open, free, got) => panic!("open_channel: {open} {free:?} gave {got:?}"),
                }
            }
            Step::Publish {
                pick: n,
                mandatory,
                route,
                len,
            } => {
                let id = self.app_pick(*n);
                let Some(mut ch) = self.app_channel(id) else {
                    return;
                };
                let publish = BasicPublish {
                    exchange: s("amq.direct"),
                    routing_key: s(ROUTES[route % 2]),
                    mandatory: *mandatory,
                    immediate: false,
                };
                let body = Bytes::from(vec![b'p'; *len]);
                let got = ch.basic_publish(publish, &BasicProperties::default(), body);
                let c = self.app.get_mut(&id).expect("model");
                match got {
                    Err(UsageError::FlowPaused) => assert!(c.paused),
                    Ok(tag) => {
                        assert!(!c.paused, "published while paused");
                        let want = c.confirm.then(|| {
                            c.next_publish += 1;
                            DeliveryTag(c.next_publish)
                        });
                        assert_eq!(tag, want);
                        if let Some(t) = tag {
                            c.unconfirmed.insert(t.0);
                        }
                    }
                    Err(e) => panic!("publish: {e:?}"),
                }
            }
            Step::Select { pick: n, no_wait } => {
                let id = self.app_pick(*n);
                let Some(mut ch) = self.app_channel(id) else {
                    return;
                };
                let got = ch
                    .call(ConfirmSelect { no_wait: *no_wait })
                    .expect("select");
                let c = self.app.get_mut(&id).expect("model");
                c.confirm = true;
                assert_eq!(got.is_none(), *no_wait);
                if let Some(r) = got {
                    c.requests.push_back((r, Req::Other(&[(85, 11)])));
                }
            }
            Step::Settle {
                pick: n,
                tag,
                multiple,
                how,
            } => {
                let id = self.app_pick(*n);
                if self.app_channel(id).is_none() {
                    return;
                }
                let c = self.app.get_mut(&id).expect("model");
                let mut tags: Vec<u64> = c.unacked.iter().copied().collect();
                tags.push(0);
                tags.push(c.unacked.last().map_or(1, |t| t + 1));
                let t = tags[tag % tags.len()];
                let multiple = *multiple && how % 3 != 2;
                let known = if multiple && t == 0 {
                    let any = !c.unacked.is_empty();
                    c.unacked.clear();
                    any
                } else if multiple {
                    let below: Vec<u64> = c.unacked.range(..=t).copied().collect();
                    for b in &below {
                        c.unacked.remove(b);
                    }
                    !below.is_empty()
                } else {
                    c.unacked.remove(&t)
                };
                let mut ch = self.w.conn.channel(ChannelId(id)).expect("open");
                let tag = DeliveryTag(t);
                let got = match how % 3 {
                    0 => ch.basic_ack(tag, multiple),
                    1 => ch.basic_nack(tag, multiple, true),
                    _ => ch.basic_reject(tag, false),
                };
                match got {
                    Ok(()) => assert!(known, "settled unknown tag {t}"),
                    Err(UsageError::UnknownDeliveryTag(_)) => {
                        assert!(!known, "refused unsettled tag {t}")
                    }
                    Err(e) => panic!("settle: {e:?}"),
                }
            }
            Step::Call {
                pick: n,
                what,
                tag,
                flag,
            } => self.call(*n, *what, TAGS[tag % TAGS.len()], *flag),
            Step::CloseChannel { pick: n } => {
                let id = self.app_pick(*n);
                let Some(mut ch) = self.app_channel(id) else {
                    return;
                };
                ch.close(ReplyCode::SUCCESS, "bye").expect("close");
                self.app.get_mut(&id).expect("model").closing = true;
            }
            Step::CloseConnection => {
                if self.app_open {
                    self.app_closed_connection = true;
                }
                self.w.conn.close(ReplyCode::SUCCESS, "bye");
                self.app_open = false;
            }
            Step::Advance { ms, force } => {
                self.w
                    .advance(Duration::from_millis(u64::from(*ms)), *force);
            }
            _ => {}
        }
    }

    fn call(&mut self, n: usize, what: usize, tag: &str, flag: bool) {
        let id = self.app_pick(n);
        if self.app_channel(id).is_none() {
            return;
        }
        let c = self.app.get_mut(&id).expect("model");
        let tag = s(tag);
        let in_use = !tag.is_empty()
            && (c.consumers.contains_key(&tag)
                || c.requests
                    .iter()
                    .any(|(_, r)| matches!(r, Req::Consume { tag: t, .. } if *t == tag)));
        let (m, req): (Method, Req) = match what % 8 {
            0 => (
                QueueDeclare {
                    queue: s("q"),
                    no_wait: flag,
                    ..Default::default()
                }
                .into(),
                Req::Other(&[(50, 11)]),
            ),
            w @ (1 | 2) => {
                let consume = BasicConsume {
                    queue: s("q"),
                    consumer_tag: tag.clone(),
                    no_ack: flag,
                    no_wait: w == 2,
                    ..Default::default()
                };
                let req = Req::Consume {
                    tag: tag.clone(),
                    no_ack: flag,
                };
                (consume.into(), req)
            }
            3 => (
                BasicGet {
                    queue: s("q"),
                    no_ack: flag,
                }
                .into(),
                Req::Get { no_ack: flag },
            ),
            4 => (
                BasicCancel {
                    consumer_tag: tag.clone(),
                    no_wait: flag,
                }
                .into(),
                Req::Cancel,
            ),
            5 => (
                BasicQos {
                    prefetch_size: 0,
                    prefetch_count: 10,
                    global: flag,
                }
                .into(),
                Req::Other(&[(60, 11)]),
            ),
            6 => (ChannelFlow { active: flag }.into(), Req::Other(&[(20, 21)])),
            _ => (
                BasicRecover { requeue: true }.into(),
                Req::Other(&[(60, 111)]),
            ),
        };
        let no_wait = m.replies().is_empty();
        let refused = match &m {
            Method::BasicConsume(m) if m.no_wait && m.consumer_tag.is_empty() => Some("NotAllowed"),
            Method::BasicConsume(_) if in_use => Some("ConsumerTagInUse"),
            Method::ChannelFlow(f) if !f.active => Some("NotAllowed"),
            _ => None,
        };
        let mut ch = self.w.conn.channel(ChannelId(id)).expect("open");
        let got = ch.call(m.clone());
        let c = self.app.get_mut(&id).expect("model");
        match (refused, got) {
            (None, Ok(request)) => {
                assert_eq!(request.is_none(), no_wait, "{}", m.name());
                match (&m, request) {
                    (Method::BasicConsume(m), None) => {
                        c.consumers.insert(m.consumer_tag.clone(), m.no_ack);
                    }
                    (Method::BasicCancel(m), None) => {
                        c.consumers.remove(&m.consumer_tag);
                    }
                    (_, Some(r)) => c.requests.push_back((r, req)),
                    _ => {}
                }
            }
            (Some("NotAllowed"), Err(UsageError::NotAllowed(_)))
            | (Some("ConsumerTagInUse"), Err(UsageError::ConsumerTagInUse(_))) => {}
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", m.name()),
        }
    }

    /// Applies one event to the model, checking it.
    fn event(&mut self, event: &Event, confirms: &mut Vec<(u16, u64, Outcome)>) {
        let channel = match event {
            Event::ChannelOpened(id)
            | Event::Reply { channel: id, .. }
            | Event::GetReply { channel: id, .. }
            | Event::Delivery { channel: id, .. }
            | Event::ConsumerCancelled { channel: id, .. }
            | Event::Returned { channel: id, .. }
            | Event::Confirm { channel: id, .. }
            | Event::Flow { channel: id, .. }
            | Event::ChannelClosed { channel: id, .. } => Some(id.0),
            _ => None,
        };
        if let Some(id) = channel {
            let c = self
                .app
                .get(&id)
                .unwrap_or_else(|| panic!("{event:?} on a channel the app never opened"));
            match event {
                Event::ChannelOpened(_) => assert!(!c.opened, "opened twice"),
                Event::ChannelClosed { .. } => {}
                _ => assert!(c.opened && !c.closing, "{event:?} on a closing channel"),
            }
        }
        match event {
            Event::ChannelOpened(id) => self.app.get_mut(&id.0).expect("model").opened = true,
            Event::Reply {
                channel,
                request,
                method,
            } => {
                let c = self.app.get_mut(&channel.0).expect("model");
                let (r, req) = c.requests.pop_front().expect("a reply nobody asked for");
                assert_eq!(r, *request, "replies out of order");
                match (req, method) {
                    (Req::Consume { no_ack, .. }, Method::BasicConsumeOk(ok)) => {
                        c.consumers.entry(ok.consumer_tag.clone()).or_insert(no_ack);
                    }
                    (Req::Cancel, Method::BasicCancelOk(ok)) => {
                        c.consumers.remove(&ok.consumer_tag);
                    }
                    (Req::Other(ids), m) if ids.contains(&m.id()) => {}
                    (req, m) => panic!("{} answers {req:?}", m.name()),
                }
            }
            Event::GetReply {
                channel,
                request,
                message,
            } => {
                let c = self.app.get_mut(&channel.0).expect("model");
                let (r, req) = c
                    .requests
                    .pop_front()
                    .expect("a get reply nobody asked for");
                assert_eq!(r, *request, "replies out of order");
                let Req::Get { no_ack } = req else {
                    panic!("a get reply answers {req:?}")
                };
                if let Some((d, _)) = message {
                    if !no_ack {
                        assert!(c.unacked.insert(d.delivery_tag.0), "tag delivered twice");
                    }
                    let (p, b) = (d.properties.clone(), d.body.clone());
                    self.check_content(channel.0, &p, &b);
                }
            }
            Event::Delivery { channel, delivery } => {
                let c = self.app.get_mut(&channel.0).expect("model");
                let no_ack = *c
                    .consumers
                    .get(&delivery.consumer_tag)
                    .expect("a delivery for a consumer the app does not have");
                if !no_ack {
                    let tag = delivery.delivery_tag.0;
                    assert!(c.unacked.insert(tag), "tag {tag} delivered twice");
                }
                let (p, b) = (delivery.properties.clone(), delivery.body.clone());
                self.check_content(channel.0, &p, &b);
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                let c = self.app.get_mut(&channel.0).expect("model");
                c.consumers.remove(consumer_tag);
            }
            Event::Returned { channel, message } => {
                assert_eq!(
                    message.routing_key, "nowhere",
                    "a return kept from its confirm"
                );
                let (p, b) = (message.properties.clone(), message.body.clone());
                self.check_content(channel.0, &p, &b);
            }
            Event::Confirm {
                channel,
                tag,
                outcome,
            } => {
                let c = self.app.get_mut(&channel.0).expect("model");
                assert!(
                    c.unconfirmed.remove(&tag.0),
                    "confirm for tag {} that is not awaiting one",
                    tag.0
                );
                let outcome = match outcome {
                    Confirmation::Ack => Outcome::Ack,
                    Confirmation::Nack => Outcome::Nack,
                    Confirmation::Returned(r) => {
                        let (p, b) = (r.properties.clone(), r.body.clone());
                        let id = p.message_id.clone().expect("message id");
                        self.check_content(channel.0, &p, &b);
                        Outcome::Returned(id)
                    }
                };
                confirms.push((channel.0, tag.0, outcome));
            }
            Event::Flow { channel, active } => {
                self.app.get_mut(&channel.0).expect("model").paused = !active;
            }
            Event::ChannelClosed { channel, reason } => {
                let c = self.app.remove(&channel.0).expect("model");
                match reason.initiator {
                    Initiator::Local => assert!(c.closing && reason.code == ReplyCode::SUCCESS),
                    Initiator::Library => assert_eq!(reason.code.0, 406, "{reason}"),
                    Initiator::Peer => {}
                }
            }
            Event::Blocked { .. } | Event::Unblocked => {}
            Event::Closed(e) => {
                assert!(self.error.is_none(), "closed twice: {e:?}");
                self.error = Some(e.clone());
                self.app_open = false;
                self.app.clear();
                match e {
                    ConnectionError::Protocol(r) => {
                        assert!(HARD.contains(&r.code.0), "{r}");
                        assert_eq!(r.initiator, Initiator::Library);
                    }
                    ConnectionError::Decode(d) => panic!("well-formed frames did not decode: {d}"),
                    ConnectionError::Closed(r) => match r.initiator {
                        Initiator::Local => assert!(self.app_closed_connection),
                        _ => assert!(self.broker_closing, "{r}"),
                    },
                    ConnectionError::MissedHeartbeats(_) => assert_ne!(self.heartbeat, 0),
                    ConnectionError::UnexpectedEof => assert!(self.eof),
                    ConnectionError::CloseTimeout => {}
                    other => panic!("unexpected end: {other:?}"),
                }
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    /// One step, then everything the engine wrote and reported is checked.
    fn step(&mut self, step: &Step) {
        let mut x = Expect::default();
        self.step_closes.clear();
        let app_closing = matches!(step, Step::CloseConnection) && self.app_open;
        self.broker(step, &mut x);
        // The engine refuses a message over its limit by closing the channel (406).
        x.channel_closes
            .extend(self.oversized.drain(..).map(|ch| (ch, 406)));
        self.app(step);
        let (frames, events) = self.w.pump();
        for f in &frames {
            self.observe(f);
        }
        for &(ch, code) in &self.step_closes {
            // The engine refused something on this channel and closed it (406).
            if let (Some(c), 406) = (self.app.get_mut(&ch), code) {
                c.closing = true;
            }
        }
        let mut confirms = Vec::new();
        for e in &events {
            self.event(e, &mut confirms);
        }
        assert_eq!(confirms, x.confirms, "confirms for {step:?}");
        for (what, matches) in &x.events {
            assert!(events.iter().any(matches), "expected {what}: {events:?}");
        }
        for (what, matches) in &x.forbidden {
            assert!(!events.iter().any(matches), "unexpected {what}: {events:?}");
        }
        for &(ch, code) in &self.step_closes {
            match ch {
                0 if app_closing => assert_eq!(code, 200),
                0 => assert!(HARD.contains(&code), "connection.close {code}"),
                _ => assert!(code == 200 || code == 406, "channel.close {code}"),
            }
        }
        if let Some(code) = x.connection_close {
            assert!(
                self.step_closes.contains(&(0, code)),
                "expected connection.close {code} after {step:?}, sent {:?}",
                self.step_closes
            );
        }
        for &(ch, code) in &x.channel_closes {
            assert!(
                self.step_closes.contains(&(ch, code)),
                "expected channel.close {code} on {ch}"
            );
        }
        if let Some(e) = &self.error {
            assert_eq!(self.w.conn.error(), Some(e), "the error is sticky");
        }
    }

    /// Ends the connection cleanly whatever state it is in.
    fn finish(&mut self) {
        if self.app_open {
            self.step(&Step::CloseConnection);
        }
        if !self.done && self.client_close.is_some() {
            self.w.send(&method(0, ConnectionCloseOk));
            self.done = true;
            let (frames, events) = self.w.pump();
            assert!(frames.is_empty(), "{frames:?}");
            let mut confirms = Vec::new();
            for e in &events {
                self.event(e, &mut confirms);
            }
        }
        assert!(
            self.w.conn.is_closed() || !self.done,
            "{:?}",
            self.w.conn.state()
        );
        if self.app_closed_connection && self.error.is_none() {
            panic!("a closed connection reported no Closed event");
        }
    }
}

/// channel_max, frame_max and heartbeat offered; the client's max_message_size.
fn limits() -> impl Strategy<Value = (u16, u32, u16, u64)> {
    (
        prop_oneof![Just(3u16), Just(2047)],
        prop_oneof![Just(4096u32), Just(131_072)],
        prop_oneof![Just(0u16), Just(2), Just(60)],
        prop_oneof![3 => Just(128u64 << 20), 1 => Just(400)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn broker_and_app_interleaved(
        (channel_max, frame_max, heartbeat, max_message_size) in limits(),
        body in vec(body_step(), 1..100),
        ending in proptest::option::of(ending_step()),
        tail in vec(body_step(), 0..8),
    ) {
        let mut run = Run::new(channel_max, frame_max, heartbeat, max_message_size);
        let steps = prologue().into_iter().chain(body).chain(ending).chain(tail);
        for step in &steps.collect::<Vec<_>>() {
            run.step(step);
        }
        run.finish();
    }
}
