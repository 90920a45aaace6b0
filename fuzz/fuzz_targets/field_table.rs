//! Fuzz target `field_table`: runs [`amqp_wire_fuzz::check_field_table`] on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amqp_wire_fuzz::check_field_table(data);
});
