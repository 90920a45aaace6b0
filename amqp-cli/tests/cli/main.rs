//! The `amqp` binary against the real broker at `AMQP_URL`: each test runs the built binary
//! (`CARGO_BIN_EXE_amqp`) and checks its output and exit status.

mod admin;
mod consume_flags;
mod decode;
mod exchange;
mod hostile;
mod messages;
mod perf;
mod support;
