//! Fuzz target `content_header`: runs [`amqp_wire_fuzz::check_content_header`] on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amqp_wire_fuzz::check_content_header(data);
});
