//! Heap allocations per delivered and per published message, ours beside amq-protocol's
//! (lapin's codec), on the same octets as `benches/peers.rs`. Not a criterion bench: it counts,
//! prints a table, and writes `$CARGO_TARGET_DIR/amqp-benches/alloc.json` for the `compare`
//! harness's report (`compare --codec-report`).
//!
//! A counting global allocator counts `alloc`/`alloc_zeroed`/`realloc` calls while a flag is
//! set; the program is single-threaded, so everything counted is the measured code's.

// A `GlobalAlloc` impl is unsafe by definition (the trait is `unsafe`); this one only counts
// and forwards every call to `System` unchanged. The library crates stay `forbid`.
#![allow(unsafe_code)]

mod amq;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use amq_protocol::protocol::BasicProperties as AmqProperties;
use amqp_benches::{
    BODIES, CHANNEL, FRAME_MAX, body, consuming_connection, decode_all, delivery_stream, drain,
    field_table_20, publish_method, publish_properties, read_chunks, stream_label,
};
use amqp_wire::connection::Event;
use amqp_wire::{FieldTable, FrameDecoder, Transmit};
use bytes::BytesMut;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static MEASURING: AtomicBool = AtomicBool::new(false);

fn note_allocation() {
    if MEASURING.load(Ordering::Relaxed) {
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

/// Runs `f` and returns how many allocations were made meanwhile.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    MEASURING.store(true, Ordering::SeqCst);
    f();
    MEASURING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Messages per count under `cargo bench`: enough that one-off growth (a buffer, a decoder)
/// is noise. `cargo test --all-targets` runs this file unoptimised, as a smoke test: 64.
const COUNT: usize = 2_000;
const SMOKE_COUNT: usize = 64;

/// One measured row: what, for whom, and allocations per message.
struct Row {
    case: String,
    codec: &'static str,
    per_message: f64,
}

fn deliveries(rows: &mut Vec<Row>, count: usize) {
    let now = Duration::ZERO;
    for (len, label) in BODIES {
        for rich in [false, true] {
            let case = format!("deliver {}", stream_label(label, rich));
            let stream = delivery_stream(count, len, rich);

            let mut src = BytesMut::from(&stream[..]);
            let mut decoder = FrameDecoder::new(FRAME_MAX);
            let ours = allocations_in(|| {
                decode_all(&mut decoder, &mut src);
            });
            drop(src);

            let mut conn = consuming_connection(now);
            let mut reads: Vec<BytesMut> = read_chunks(&stream, 64 * 1024)
                .iter()
                .map(|r| BytesMut::from(&r[..]))
                .collect();
            let mut delivered = 0;
            let engine = allocations_in(|| {
                for src in &mut reads {
                    conn.handle_input(now, src);
                    while let Some(event) = conn.poll_event() {
                        delivered += usize::from(matches!(event, Event::Delivery { .. }));
                        black_box(event);
                    }
                }
            });
            assert_eq!(delivered, count);
            drop(reads);

            let amq = allocations_in(|| {
                black_box(amq::decode_all(&stream));
            });
            for (codec, n) in [
                ("ours", ours),
                ("ours-engine", engine),
                ("amq-protocol", amq),
            ] {
                rows.push(Row {
                    case: case.clone(),
                    codec,
                    per_message: n as f64 / count as f64,
                });
            }
        }
    }
}

fn publishes(rows: &mut Vec<Row>, count: usize) {
    let publish = publish_method();
    let properties = publish_properties();
    let amq_properties = AmqProperties::default().with_delivery_mode(2);
    for (len, label) in BODIES {
        let body = body(len);
        let mut out = Transmit::new();
        let publish_all = |out: &mut Transmit| {
            // 64 publishes per vectored write, as a busy driver's writes carry.
            for _ in 0..count / 64 {
                for _ in 0..64 {
                    out.push_publish(CHANNEL, &publish, &properties, body.clone(), FRAME_MAX)
                        .expect("a publish fits its frames");
                }
                drain(out);
            }
        };
        publish_all(&mut out); // warm-up: the reused buffers reach their size
        let ours = allocations_in(|| publish_all(&mut out));

        let mut buffer = Vec::new();
        let amq_all = |buffer: &mut Vec<u8>| {
            for _ in 0..count / 64 {
                buffer.clear();
                for _ in 0..64 {
                    amq::serialise(&amq::publish_frames(&amq_properties, &body), buffer);
                }
            }
        };
        amq_all(&mut buffer);
        let amq = allocations_in(|| amq_all(&mut buffer));
        let sent = (count / 64 * 64) as f64;
        rows.push(Row {
            case: format!("publish {label}"),
            codec: "ours",
            per_message: ours as f64 / sent,
        });
        rows.push(Row {
            case: format!("publish {label}"),
            codec: "amq-protocol",
            per_message: amq as f64 / sent,
        });
    }
}

fn tables(rows: &mut Vec<Row>, n: usize) {
    let table = field_table_20();
    let mut encoded = BytesMut::new();
    table.encode(&mut encoded);
    let encoded = encoded.freeze();
    let theirs = amq::decode_table(&encoded);
    let mut dst = BytesMut::with_capacity(encoded.len());
    let ours_enc = allocations_in(|| {
        for _ in 0..n {
            dst.clear();
            table.encode(&mut dst);
        }
    });
    let mut buffer = Vec::with_capacity(encoded.len());
    let amq_enc = allocations_in(|| {
        for _ in 0..n {
            amq::encode_table(&theirs, &mut buffer);
        }
    });
    let ours_dec = allocations_in(|| {
        for _ in 0..n {
            black_box(FieldTable::decode(&encoded).expect("valid"));
        }
    });
    let amq_dec = allocations_in(|| {
        for _ in 0..n {
            black_box(amq::decode_table(&encoded));
        }
    });
    for (case, codec, allocs) in [
        ("table20 encode", "ours", ours_enc),
        ("table20 encode", "amq-protocol", amq_enc),
        ("table20 decode", "ours", ours_dec),
        ("table20 decode", "amq-protocol", amq_dec),
    ] {
        rows.push(Row {
            case: case.to_owned(),
            codec,
            per_message: allocs as f64 / n as f64,
        });
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not (a smoke test, whose
    // unoptimised counts are not written).
    let bench = std::env::args().any(|a| a == "--bench");
    let count = if bench { COUNT } else { SMOKE_COUNT };
    let mut rows = Vec::new();
    deliveries(&mut rows, count);
    publishes(&mut rows, count);
    tables(&mut rows, count);
    println!("{:<24} {:<14} {:>12}", "case", "codec", "allocs/msg");
    for row in &rows {
        println!(
            "{:<24} {:<14} {:>12.2}",
            row.case, row.codec, row.per_message
        );
    }
    if !bench {
        return;
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "case": r.case,
                "codec": r.codec,
                "allocations_per_message": r.per_message,
            })
        })
        .collect();
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("amqp-benches");
    if std::fs::create_dir_all(&dir).is_ok() {
        let path = dir.join("alloc.json");
        match std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        ) {
            Ok(()) => println!("written to {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}
