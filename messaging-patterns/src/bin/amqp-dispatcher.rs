//! `amqp-dispatcher --config FILE [--validate] [--http ADDR] [--log-format json]`: the
//! YAML-driven consumer host (see `--help`).
//!
//! Consumers name a Python class (`consumer: module:Class`, as the original
//! amqp-dispatcher), an external command (`command: [program, args...]`), or a handler
//! registered here; this binary registers `log`, which logs each message and acks it. To
//! run handlers written in Rust, build a binary like this one that registers them and calls
//! [`messaging_patterns::dispatcher::main_with`].

use std::process::ExitCode;

use messaging_patterns::dispatcher::{Handler, HandlerError, Message, MessageHandle, Registry};

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
    let mut registry = Registry::new();
    registry.register("log", || Log);
    let ended = messaging_patterns::dispatcher::main_with(registry).await;
    match ended.message {
        Some(Ok(text)) => println!("{text}"),
        Some(Err(text)) => eprintln!("{text}"),
        None => {}
    }
    ended.code
}
