//! Codec benchmarks, no broker: rates are per message (`Throughput::Elements`).
//!
//! - `deliver_decode/decode`: [`FrameDecoder`] over 10,000 deliveries as RabbitMQ sends them
//!   (method, header, body frames), 16 B, 4 KiB and 128 KiB bodies, with and without a
//!   5-entry headers table and a message id (`+headers`). The read buffer is filled before
//!   timing starts, as a socket read would have.
//! - `deliver_decode/floor`: the same streams, only finding the frames ([`scan_frames`]).
//! - `deliver_engine/handle_input`: the deliver path through the engine: the same streams (16 B
//!   and 4 KiB bodies) fed to [`Connection::handle_input`] of a connection with a no-ack
//!   consumer, in reads of at most 64 KiB that end between frames, draining
//!   [`Connection::poll_event`] after each read as a driver does.
//! - `publish_encode`: 10,000 publishes queued on a reused [`Transmit`], then drained as a
//!   vectored write would, for 16 B, 4 KiB, 128 KiB and 1 MiB bodies.
//! - `field_table`: encoding and decoding a 20-entry table.

use std::hint::black_box;
use std::time::Duration;

use amqp_benches::{
    BODIES, CHANNEL, FRAME_MAX, MESSAGES, body, consuming_connection, decode_all, delivery_stream,
    drain, field_table_20, publish_method, publish_properties, read_chunks, scan_frames,
    stream_label,
};
use amqp_wire::connection::{Connection, Event};
use amqp_wire::{FieldTable, FrameDecoder, Transmit};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Body sizes and their labels: [`BODIES`] and 1 MiB.
const ENCODE_BODIES: [(usize, &str); 4] = [
    (16, "16B"),
    (4096, "4KiB"),
    (131_072, "128KiB"),
    (1 << 20, "1MiB"),
];

fn deliver_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("deliver_decode");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    for (len, label) in BODIES {
        // A 128 KiB stream is 1.3 GB: copying it into the read buffer takes longer than
        // decoding it, so take fewer samples.
        group.sample_size(if len > 4096 { 10 } else { 100 });
        for rich in [false, true] {
            let stream = delivery_stream(MESSAGES, len, rich);
            let frames = scan_frames(&stream).expect("a valid stream");
            let id = stream_label(label, rich);
            group.bench_with_input(BenchmarkId::new("decode", &id), &stream, |b, stream| {
                let mut decoder = FrameDecoder::new(FRAME_MAX);
                b.iter_batched(
                    || BytesMut::from(&stream[..]),
                    |mut src| {
                        assert_eq!(decode_all(&mut decoder, &mut src), frames);
                        src
                    },
                    BatchSize::PerIteration,
                );
            });
            group.bench_with_input(BenchmarkId::new("floor", &id), &stream, |b, stream| {
                b.iter(|| assert_eq!(scan_frames(black_box(stream)), Some(frames)));
            });
        }
    }
    group.finish();
}

/// The size of one socket read in the engine bench: `amqp-client`'s driver keeps 64 KiB free
/// in its read buffer before each read, and a busy consumer's reads fill it.
const READ_SIZE: usize = 64 * 1024;

fn deliver_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("deliver_engine");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let now = Duration::ZERO;
    for (len, label) in &BODIES[..2] {
        for rich in [false, true] {
            let reads = read_chunks(&delivery_stream(MESSAGES, *len, rich), READ_SIZE);
            let id = stream_label(label, rich);
            let mut conn = consuming_connection(now);
            group.bench_with_input(BenchmarkId::new("handle_input", &id), &reads, |b, reads| {
                b.iter_batched(
                    || reads.iter().map(|r| BytesMut::from(&r[..])).collect(),
                    |mut reads: Vec<BytesMut>| {
                        assert_eq!(handle_reads(&mut conn, now, &mut reads), MESSAGES);
                        reads
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    group.finish();
}

/// Feeds each read to the engine and drains its events, as a driver does; returns the number
/// of deliveries.
fn handle_reads(conn: &mut Connection, now: Duration, reads: &mut [BytesMut]) -> usize {
    let mut deliveries = 0;
    for src in reads {
        conn.handle_input(now, src);
        while let Some(event) = conn.poll_event() {
            deliveries += usize::from(matches!(event, Event::Delivery { .. }));
            black_box(event);
        }
    }
    deliveries
}

fn publish_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_encode");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let publish = publish_method();
    let properties = publish_properties();
    for (len, label) in ENCODE_BODIES {
        let body = body(len);
        let mut out = Transmit::new();
        group.bench_function(BenchmarkId::new("transmit", label), |b| {
            b.iter(|| {
                for _ in 0..MESSAGES {
                    out.push_publish(CHANNEL, &publish, &properties, body.clone(), FRAME_MAX)
                        .expect("a publish fits its frames");
                }
                drain(&mut out)
            });
        });
    }
    group.finish();
}

fn field_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("field_table");
    let table = field_table_20();
    let mut encoded = BytesMut::new();
    table.encode(&mut encoded);
    let encoded: Bytes = encoded.freeze();
    group.throughput(Throughput::Elements(1));
    let mut dst = BytesMut::with_capacity(encoded.len());
    group.bench_function("encode_20", |b| {
        b.iter(|| {
            dst.clear();
            black_box(&table).encode(&mut dst);
            dst.len()
        });
    });
    group.bench_function("decode_20", |b| {
        b.iter(|| FieldTable::decode(black_box(&encoded)).expect("a valid table"));
    });
    group.finish();
}

criterion_group!(
    benches,
    deliver_decode,
    deliver_engine,
    publish_encode,
    field_table
);
criterion_main!(benches);
