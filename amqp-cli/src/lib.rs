//! The `amqp` command line: publish, consume, get, rpc, declare, delete, purge, decode, perf,
//! and its own man pages.
//!
//! Every broker command connects through `--url` (or `AMQP_URL`, by default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`) with `amqp-client`'s public API; `decode` uses
//! only `amqp-wire`'s codec. Each subcommand is one module with its clap arguments and a
//! `run` function; the binary (`src/main.rs`) parses, dispatches and prints errors.
//!
//! ```text
//! amqp publish -k jobs --body hello --header retries:int=3 --confirm
//! amqp consume -q jobs --count 1 --json
//! amqp rpc -k calc --body 2+2 --timeout 5
//! amqp declare queue jobs --type quorum
//! amqp decode capture.bin --json
//! amqp perf --producers 2 --consumers 2 --size 4096 --duration 30
//! amqp consume --exchange logs -k 'error.*' --exec ./handle.sh
//! amqp man /usr/local/share/man/man1
//! ```
//!
//! Errors are [`CliError`]: each prints as one line that names the host, the queue or
//! exchange, and the reply code with what it means.
#![forbid(unsafe_code)]

pub mod broker;
pub mod consume;
pub mod declare;
pub mod decode;
pub mod duration;
pub mod error;
pub mod frame_fields;
pub mod headers;
pub mod json;
pub mod man;
pub mod perf;
pub mod perf_report;
pub mod publish;
pub mod rpc;

pub use error::{CliError, Result};
