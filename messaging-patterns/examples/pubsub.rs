//! Publish-subscribe: a topic publisher and two subscribers, one with a pattern.
//!
//! `cargo run -p messaging-patterns --example pubsub` (RabbitMQ at `AMQP_URL`).

use futures_util::StreamExt;
use messaging_patterns::codec::Json;
use messaging_patterns::pubsub::{ExchangeType, Publisher, SubscribeOptions, Subscription};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let conn = amqp_client::Connection::connect(&url).await?;
    let codec = Json::<String>::new();
    let topic = ExchangeType::Topic;
    let options = SubscribeOptions {
        prefix: "example.".into(),
        ..Default::default()
    };
    let mut errors = Subscription::subscribe(
        &conn,
        "logs",
        topic,
        &["*.error"],
        codec.clone(),
        options.clone(),
    )
    .await?;
    let everything =
        Subscription::subscribe(&conn, "logs", topic, &["#"], codec.clone(), options).await?;
    let printer = everything.handle(|message| async move {
        println!("[all]    {}: {}", message.routing_key, message.payload);
        Ok::<_, String>(())
    });

    let publisher = Publisher::declare(&conn, "logs", topic, codec, "example.").await?;
    publisher
        .publish("db.info", &"connected".to_owned())
        .await?;
    publisher
        .publish("db.error", &"disk full".to_owned())
        .await?;

    if let Some(message) = errors.next().await {
        let message = message?;
        println!("[errors] {}: {}", message.routing_key, message.payload);
        message.ack().await?;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    printer.abort();
    errors.close().await?;
    conn.open_channel()
        .await?
        .exchange_delete(publisher.exchange(), false)
        .await?;
    conn.close().await?;
    Ok(())
}
