//! `amqp-dispatcher --config FILE [--validate]`: the YAML-driven consumer host.
//!
//! Consumers name an external command (`command: [program, args...]`) or a handler
//! registered here; this binary registers `log`, which logs each message and acks it. To
//! run handlers written in Rust, build a binary like this one that registers them and calls
//! [`messaging_patterns::dispatcher::main_with`].
//!
//! The connection comes from `AMQP_URL` (comma-separated hosts or URLs, tried in random
//! order) and `AMQP_HEARTBEAT` (seconds); logging from `RUST_LOG` (default `info`), on stderr.

use std::process::ExitCode;

use messaging_patterns::dispatcher::{Handler, HandlerError, Message, MessageHandle, Registry};
use tracing_subscriber::EnvFilter;

/// Logs each message and acks it.
struct Log;

impl Handler for Log {
    async fn consume(&mut self, message: Message, _: &MessageHandle) -> Result<(), HandlerError> {
        tracing::info!(
            exchange = %message.exchange,
            routing_key = %message.routing_key,
            body = %String::from_utf8_lossy(&message.body),
            "message"
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut registry = Registry::new();
    registry.register("log", || Log);
    let ended = messaging_patterns::dispatcher::main_with(registry).await;
    match ended.message {
        Some(Ok(line)) => println!("{line}"),
        Some(Err(line)) => eprintln!("{line}"),
        None => {}
    }
    ended.code
}
