//! amq-protocol (lapin's codec) driven the way lapin drives it, for the benches that measure
//! it beside ours (`peers.rs` for time, `alloc.rs` for allocations): one copy, so both
//! measure the same work.

use std::hint::black_box;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties, basic};
use amq_protocol::types::FieldTable;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amqp_benches::{CHANNEL, FRAME_MAX};

/// What lapin's `basic_publish` queues for one message to the default exchange with routing
/// key `bench` (as [`amqp_benches::publish_method`]): the method, the header and the body cut
/// into owned chunks of at most `frame_max - 8` octets (`send_method_frame_with_body`).
pub(crate) fn publish_frames(properties: &BasicProperties, payload: &[u8]) -> Vec<AMQPFrame> {
    let channel = CHANNEL.0;
    let method = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: "bench".into(),
        mandatory: false,
        immediate: false,
    }));
    let header = AMQPContentHeader {
        class_id: 60,
        body_size: payload.len() as u64,
        properties: properties.clone(),
    };
    let mut frames = vec![
        AMQPFrame::Method(channel, method),
        AMQPFrame::Header(channel, header),
    ];
    frames.extend(
        payload
            .chunks(FRAME_MAX as usize - 8)
            .map(|c| AMQPFrame::Body(channel, c.into())),
    );
    frames
}

/// Serialises `frames` at the end of `buffer` with amq-protocol's generator.
pub(crate) fn serialise(frames: &[AMQPFrame], buffer: &mut Vec<u8>) {
    for frame in frames {
        let context = WriteContext::from(std::mem::take(buffer));
        let (written, _) = gen_frame(frame)(context)
            .expect("a publish serialises")
            .into_inner();
        *buffer = written;
    }
}

/// Parses every frame in `stream`, advancing by what each consumed as lapin's I/O loop does
/// over its buffer; returns how many there were.
pub(crate) fn decode_all(stream: &[u8]) -> usize {
    let mut rest = stream;
    let mut frames = 0;
    while !rest.is_empty() {
        let (next, frame) = parse_frame(rest).expect("a valid stream");
        black_box(frame);
        rest = next;
        frames += 1;
    }
    frames
}

/// Serialises `table` into `buffer`, replacing what it held.
pub(crate) fn encode_table(table: &FieldTable, buffer: &mut Vec<u8>) {
    buffer.clear();
    let context = WriteContext::from(std::mem::take(buffer));
    let (written, _) = gen_field_table(table)(context)
        .expect("the table serialises")
        .into_inner();
    *buffer = written;
}

/// Parses one of our encoded tables, which must be all of `encoded`.
pub(crate) fn decode_table(encoded: &[u8]) -> FieldTable {
    let (rest, table) = parse_field_table(encoded).expect("amq-protocol reads our table");
    assert!(rest.is_empty());
    table
}
