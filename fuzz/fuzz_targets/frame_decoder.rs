//! Fuzz target `frame_decoder`: runs [`amqp_wire_fuzz::check_frame_stream`] on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amqp_wire_fuzz::check_frame_stream(data);
});
