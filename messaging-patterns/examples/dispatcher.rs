//! The dispatcher embedded with a handler written in Rust, stopped by Ctrl-C (or after a few
//! seconds here). The same file runs with the binary:
//! `cargo run -p messaging-patterns --bin amqp-dispatcher -- --config FILE`.
//!
//! `cargo run -p messaging-patterns --example dispatcher` (RabbitMQ at `AMQP_URL`).

use std::time::Duration;

use messaging_patterns::dispatcher::{
    Config, Dispatcher, Handler, HandlerError, Message, MessageHandle, Registry, shutdown_signal,
};

const CONFIG: &str = "
queues:
  - name: example.greetings
    auto_delete: true
    durable: false
    exclusive: true
consumers:
  - handler: greet
    queue: example.greetings
    consumer_count: 2
    prefetch_count: 10
    exclusivity_key: { header: user }
";

/// Answers each greeting when the message asks for a reply.
struct Greet;

impl Handler for Greet {
    async fn consume(
        &mut self,
        message: Message,
        handle: &MessageHandle,
    ) -> Result<(), HandlerError> {
        let name = String::from_utf8_lossy(&message.body).into_owned();
        println!("hello, {name}");
        handle
            .reply(Default::default(), format!("hello, {name}").into())
            .await
    }

    async fn shutdown(&mut self) {
        println!("instance stopping");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = Registry::new();
    registry.register("greet", || Greet);
    let config = Config::parse(CONFIG, registry.names())?;
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = messaging_patterns::dispatcher::connection_config(&url, None)?;
    let dispatcher = Dispatcher::new(config, registry, connection)?;
    let run = tokio::spawn(dispatcher.run(async {
        tokio::select! {
            () = shutdown_signal() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let conn = amqp_client::Connection::connect(&url).await?;
    let channel = conn.open_channel().await?;
    for name in ["ann", "bob"] {
        let publish = channel.publish(
            "",
            "example.greetings",
            Default::default(),
            Default::default(),
            name,
        );
        drop(publish.await?);
    }
    run.await??;
    conn.close().await?;
    Ok(())
}
