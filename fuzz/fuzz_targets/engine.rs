//! Fuzz target `engine`: runs [`amqp_wire_fuzz::check_engine`] on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amqp_wire_fuzz::check_engine(data);
});
