//! Our codec side by side with `amq-protocol` (lapin's codec), doing the same work on the same
//! bytes; rates are per message (`Throughput::Elements`).
//!
//! - `peers_deliver_decode/{ours,amq-protocol,floor}/SIZE[+headers]`: 10,000 deliveries as
//!   RabbitMQ sends them (`basic.deliver`, content header, body frames of at most 128 KiB),
//!   16 B, 4 KiB and 128 KiB bodies, with and without a 5-entry headers table and a message id.
//!   Ours is [`FrameDecoder::decode`] over a `BytesMut` filled before timing starts (as a
//!   socket read leaves it); amq-protocol's is [`parse_frame`] over the same octets as a
//!   `&[u8]`, advancing by what it consumed, as lapin's I/O loop does over its buffer. The
//!   floor only finds the frames ([`scan_frames`]): no decoder can do less.
//! - `peers_publish_encode/{ours,amq-protocol}/SIZE`: 10,000 publishes of one body to the
//!   default exchange, persistent. Ours queues each on a reused [`Transmit`]
//!   ([`Transmit::push_publish`]) and drains it as a vectored write would. amq-protocol's does
//!   what lapin's `basic_publish` does for each message: builds the method, header and body
//!   `AMQPFrame`s (the body copied into `Vec`s of at most `frame_max - 8` octets, lapin's
//!   `send_method_frame_with_body`) and serialises them with [`gen_frame`] into a reused send
//!   buffer.
//! - `peers_field_table/{ours,amq-protocol}/{encode,decode}`: the 20-entry table of
//!   [`field_table_20`], amq-protocol's being the same table parsed by amq-protocol.

mod amq;

use std::hint::black_box;

use amq_protocol::protocol::BasicProperties as AmqProperties;
use amqp_benches::{
    BODIES, CHANNEL, FRAME_MAX, MESSAGES, body, decode_all, delivery_stream, drain, field_table_20,
    publish_method, publish_properties, scan_frames, stream_label,
};
use amqp_wire::{FieldTable, FrameDecoder, Transmit};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Messages per measured stream: [`MESSAGES`] under `cargo bench`; 100 when `cargo test
/// --all-targets` runs each benchmark once, unoptimised, as a smoke test (a 128 KiB stream of
/// 10,000 messages is 1.3 GB).
fn messages() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        MESSAGES
    } else {
        100
    }
}

fn deliver_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers_deliver_decode");
    let count = messages();
    group.throughput(Throughput::Elements(count as u64));
    for (len, label) in BODIES {
        // A 128 KiB stream is 1.3 GB: filling the read buffer takes longer than decoding it.
        group.sample_size(if len > 4096 { 10 } else { 50 });
        for rich in [false, true] {
            let stream = delivery_stream(count, len, rich);
            let frames = scan_frames(&stream).expect("a valid stream");
            let id = stream_label(label, rich);
            group.bench_with_input(BenchmarkId::new("ours", &id), &stream, |b, stream| {
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
            group.bench_with_input(
                BenchmarkId::new("amq-protocol", &id),
                &stream,
                |b, stream| b.iter(|| assert_eq!(amq::decode_all(black_box(stream)), frames)),
            );
            group.bench_with_input(BenchmarkId::new("floor", &id), &stream, |b, stream| {
                b.iter(|| assert_eq!(scan_frames(black_box(stream)), Some(frames)));
            });
        }
    }
    group.finish();
}

fn publish_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers_publish_encode");
    let count = messages();
    group.throughput(Throughput::Elements(count as u64));
    let publish = publish_method();
    let properties = publish_properties();
    let amq_properties = AmqProperties::default().with_delivery_mode(2);
    for (len, label) in BODIES {
        group.sample_size(if len > 4096 { 10 } else { 50 });
        let body = body(len);
        let mut out = Transmit::new();
        group.bench_function(BenchmarkId::new("ours", label), |b| {
            b.iter(|| {
                for _ in 0..count {
                    out.push_publish(CHANNEL, &publish, &properties, body.clone(), FRAME_MAX)
                        .expect("a publish fits its frames");
                }
                drain(&mut out)
            });
        });
        let mut buffer = Vec::new();
        group.bench_function(BenchmarkId::new("amq-protocol", label), |b| {
            b.iter(|| {
                buffer.clear();
                for _ in 0..count {
                    let frames = amq::publish_frames(&amq_properties, &body);
                    amq::serialise(&frames, &mut buffer);
                }
                buffer.len()
            });
        });
    }
    group.finish();
}

fn field_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers_field_table");
    group.throughput(Throughput::Elements(1));
    let table = field_table_20();
    let mut encoded = BytesMut::new();
    table.encode(&mut encoded);
    let encoded: Bytes = encoded.freeze();
    let theirs = amq::decode_table(&encoded);
    assert_eq!(theirs.inner().len(), 20);

    let mut dst = BytesMut::with_capacity(encoded.len());
    group.bench_function(BenchmarkId::new("ours", "encode"), |b| {
        b.iter(|| {
            dst.clear();
            black_box(&table).encode(&mut dst);
            dst.len()
        });
    });
    let mut buffer = Vec::with_capacity(encoded.len());
    group.bench_function(BenchmarkId::new("amq-protocol", "encode"), |b| {
        b.iter(|| {
            amq::encode_table(black_box(&theirs), &mut buffer);
            buffer.len()
        });
    });
    assert_eq!(buffer.len(), encoded.len(), "both encode the same octets");
    group.bench_function(BenchmarkId::new("ours", "decode"), |b| {
        b.iter(|| FieldTable::decode(black_box(&encoded)).expect("a valid table"));
    });
    group.bench_function(BenchmarkId::new("amq-protocol", "decode"), |b| {
        b.iter(|| amq::decode_table(black_box(&encoded)));
    });
    group.finish();
}

criterion_group!(benches, deliver_decode, publish_encode, field_table);
criterion_main!(benches);
