//! The hot paths do not allocate: decoding deliveries as RabbitMQ sends them, on their own and
//! through the engine (`Connection::handle_input` and `poll_event`), and queueing publishes on a
//! reused [`Transmit`].
//!
//! A counting global allocator counts `alloc`/`alloc_zeroed`/`realloc` calls made by the
//! current thread while it is measuring, so the test harness's own threads are not counted.
//! Tests run one at a time under [`SERIAL`] all the same, to keep the numbers easy to read.

// A `GlobalAlloc` impl is unsafe by definition (the trait is `unsafe`); this one only counts
// and forwards every call to `System` unchanged. The library itself stays `forbid`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use amqp_wire::connection::{ClientConfig, Connection, Event};
use amqp_wire::methods::{
    BasicConsume, BasicConsumeOk, BasicDeliver, BasicPublish, ChannelOpenOk, ConnectionOpenOk,
    ConnectionStart, ConnectionTune,
};
use amqp_wire::{
    BasicProperties, ChannelId, ContentHeader, DeliveryTag, Frame, FrameDecoder, Method, ShortStr,
    Transmit,
};
use bytes::{Buf, Bytes, BytesMut};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// True while the current thread is measuring. `const` and `Cell<bool>`: reading it
    /// allocates nothing and registers no destructor.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as `alloc`; `ptr` was allocated by `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Serialises the tests of this file: the counter is global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` and returns how many allocations the current thread made meanwhile.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

const DELIVERIES: usize = 1000;
const WARM_UP: usize = 100;
const FRAME_MAX: u32 = 131_072;

/// One delivery as RabbitMQ sends it: basic.deliver, a content header with only
/// `delivery_mode`, and one 16-octet body frame.
fn encode_delivery(dst: &mut BytesMut, tag: u64) {
    let channel = ChannelId(1);
    let deliver = BasicDeliver {
        consumer_tag: ShortStr::from_static("amq.ctag-xyz"),
        delivery_tag: DeliveryTag(tag),
        redelivered: false,
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("k"),
    };
    let header = ContentHeader {
        body_size: 16,
        properties: BasicProperties {
            delivery_mode: Some(BasicProperties::PERSISTENT),
            ..Default::default()
        },
    };
    let frames = [
        Frame::Method(channel, Method::BasicDeliver(deliver)),
        Frame::Header(channel, header),
        Frame::Body(channel, Bytes::from_static(b"0123456789abcdef")),
    ];
    for frame in &frames {
        frame.encode(dst).unwrap();
    }
}

/// Decodes one delivery's three frames and drops them.
fn decode_delivery(decoder: &mut FrameDecoder, src: &mut BytesMut) {
    for _ in 0..3 {
        let frame = decoder.decode(src).unwrap().unwrap();
        std::hint::black_box(&frame);
    }
}

#[test]
fn decoding_deliveries_does_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut src = BytesMut::new();
    for tag in 1..=DELIVERIES as u64 {
        encode_delivery(&mut src, tag);
    }
    let mut decoder = FrameDecoder::new(FRAME_MAX);
    for _ in 0..WARM_UP {
        decode_delivery(&mut decoder, &mut src);
    }
    let allocations = allocations_in(|| {
        for _ in WARM_UP..DELIVERIES {
            decode_delivery(&mut decoder, &mut src);
        }
    });
    assert!(src.is_empty());
    assert_eq!(
        allocations,
        0,
        "{allocations} allocations decoding {} deliveries",
        DELIVERIES - WARM_UP
    );
}

/// A connection after a scripted handshake (the broker's frames encoded and fed through the
/// public API), with channel 1 open and a no-ack consumer `amq.ctag-xyz` on it.
fn consuming_connection(now: Duration) -> Connection {
    let mut conn = Connection::client(ClientConfig::default(), now);
    let drain = |conn: &mut Connection| {
        let mut out = Transmit::new();
        let _ = conn.poll_transmit(now, &mut out);
        out.advance(out.remaining());
    };
    drain(&mut conn);
    let feed = |conn: &mut Connection, channel: u16, method: Method| {
        let mut wire = BytesMut::new();
        Frame::Method(ChannelId(channel), method)
            .encode(&mut wire)
            .unwrap();
        conn.handle_input(now, &mut wire);
        drain(conn);
        std::iter::from_fn(|| conn.poll_event()).count()
    };
    let start = ConnectionStart {
        version_major: 0,
        version_minor: 9,
        mechanisms: "PLAIN".into(),
        locales: "en_US".into(),
        ..Default::default()
    };
    feed(&mut conn, 0, start.into());
    let tune = ConnectionTune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 60,
    };
    feed(&mut conn, 0, tune.into());
    assert_eq!(feed(&mut conn, 0, ConnectionOpenOk.into()), 1, "connected");
    let channel = conn.open_channel().unwrap();
    assert_eq!(channel, ChannelId(1));
    assert_eq!(feed(&mut conn, 1, ChannelOpenOk.into()), 1, "channel open");
    let consume = BasicConsume {
        queue: ShortStr::from_static("q"),
        consumer_tag: ShortStr::from_static("amq.ctag-xyz"),
        no_ack: true,
        ..Default::default()
    };
    conn.channel(channel).unwrap().call(consume).unwrap();
    let consume_ok = BasicConsumeOk {
        consumer_tag: ShortStr::from_static("amq.ctag-xyz"),
    };
    assert_eq!(feed(&mut conn, 1, consume_ok.into()), 1, "consume-ok");
    conn
}

/// The deliver path through the engine allocates nothing per delivery either: the codec, the
/// channel's content assembly, the event queue (once it has grown to a read's worth of
/// events) and `poll_event`.
#[test]
fn deliveries_through_the_engine_do_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Duration::ZERO;
    let mut conn = consuming_connection(now);
    // Reads of 100 deliveries each, as a socket would hand them over.
    let reads: Vec<BytesMut> = (0..DELIVERIES as u64 / 100)
        .map(|read| {
            let mut src = BytesMut::new();
            for tag in read * 100 + 1..=read * 100 + 100 {
                encode_delivery(&mut src, tag);
            }
            // `bytes` allocates once per buffer, at its first split (the buffer becomes
            // shared): a driver pays that per read buffer, not per delivery. Done here.
            drop(src.split_to(0));
            src
        })
        .collect();
    let mut reads = reads.into_iter();
    let handle = |conn: &mut Connection, mut src: BytesMut| {
        conn.handle_input(now, &mut src);
        assert!(src.is_empty());
        let mut deliveries = 0;
        while let Some(event) = conn.poll_event() {
            assert!(matches!(event, Event::Delivery { .. }), "{event:?}");
            deliveries += 1;
        }
        assert_eq!(deliveries, 100);
    };
    for src in reads.by_ref().take(WARM_UP / 100) {
        handle(&mut conn, src);
    }
    let allocations = allocations_in(|| {
        for src in reads.by_ref() {
            handle(&mut conn, src);
        }
    });
    assert_eq!(
        allocations,
        0,
        "{allocations} allocations handling {} deliveries",
        DELIVERIES - WARM_UP
    );
    let _ = conn.poll_transmit(now, &mut Transmit::new());
    assert!(!conn.is_closed());
}

/// Queues publishes of `body` on one reused [`Transmit`], `batch` at a time, draining the
/// queue after each batch as a socket would (a chunk at a time). Returns the allocations per
/// publish over `rounds` batches, after as many batches of warm-up.
fn allocations_per_publish(body: &Bytes, batch: usize, rounds: usize) -> f64 {
    let publish = BasicPublish {
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("k"),
        ..Default::default()
    };
    let properties = BasicProperties {
        delivery_mode: Some(BasicProperties::PERSISTENT),
        ..Default::default()
    };
    let mut out = Transmit::new();
    let publish_batch = |out: &mut Transmit| {
        for _ in 0..batch {
            out.push_publish(ChannelId(1), &publish, &properties, body.clone(), FRAME_MAX)
                .unwrap();
        }
        while out.has_remaining() {
            let n = out.chunk().len();
            out.advance(n);
        }
    };
    for _ in 0..rounds {
        publish_batch(&mut out);
    }
    let allocations = allocations_in(|| {
        for _ in 0..rounds {
            publish_batch(&mut out);
        }
    });
    allocations as f64 / (rounds * batch) as f64
}

#[test]
fn queueing_publishes_on_a_reused_transmit_allocates_at_most_once_per_publish() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for len in [16, 4096] {
        let body = Bytes::from(vec![b'x'; len]);
        // One publish per write, and 64 publishes per write.
        for (batch, rounds) in [(1, 900), (64, 50)] {
            let per_publish = allocations_per_publish(&body, batch, rounds);
            println!("{len}-octet body, {batch} per drain: {per_publish} allocations per publish");
            assert!(
                per_publish <= 1.0,
                "{per_publish} allocations per publish of a {len}-octet body"
            );
        }
    }
}

#[test]
fn the_counter_sees_this_thread_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = allocations_in(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(10));
    });
    assert_eq!(n, 1, "the counting allocator is not in use");
}
