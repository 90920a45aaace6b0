//! A short publish/consume load against the broker at `AMQP_URL`: publishes messages with
//! confirms into a fresh exclusive queue while a consumer acks them, then prints the rates.
//!
//! `cargo run --release -p amqp-client --example demo -- [MESSAGES] [BODY_SIZE]`

use std::time::Instant;

use amqp_client::{BasicProperties, Confirmation, Connection, QueueDeclareOptions};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> amqp_client::Result<()> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);

    let conn = Connection::connect(&url).await?;
    let version = conn
        .server_properties()
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    println!(
        "connected to RabbitMQ {version} at {}:{}",
        conn.endpoint().host,
        conn.endpoint().port
    );
    let publisher = conn.open_channel().await?;
    let consumer_channel = conn.open_channel().await?;
    let queue = publisher
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await?
        .name
        .to_string();
    publisher.confirm_select().await?;
    consumer_channel.qos(1000, false).await?;
    let mut consumer = consumer_channel.consume(&queue, Default::default()).await?;

    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut received = 0;
        while received < count {
            match consumer.next().await {
                Some(Ok(delivery)) => {
                    delivery.ack().await?;
                    received += 1;
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok::<_, amqp_client::Error>((received, started.elapsed()))
    });

    let body = bytes::Bytes::from(vec![b'x'; size]);
    let mut confirms = std::collections::VecDeque::new();
    let (mut acked, mut nacked) = (0usize, 0usize);
    for _ in 0..count {
        let confirm = publisher
            .publish(
                "",
                &queue,
                Default::default(),
                BasicProperties::default(),
                body.clone(),
            )
            .await?;
        confirms.push_back(confirm);
        // Keep the pipeline full but bounded: settle the oldest once 1,000 are in flight.
        if confirms.len() >= 1000 {
            if let Some(c) = confirms.pop_front() {
                tally(c.await?, &mut acked, &mut nacked);
            }
        }
    }
    for c in confirms {
        tally(c.await?, &mut acked, &mut nacked);
    }
    let published_in = started.elapsed();
    let (received, consumed_in) = consume.await.expect("consumer task")?;
    println!(
        "published {count} x {size} B with confirms in {published_in:.2?}: {:.0} msg/s ({acked} acked, {nacked} nacked)",
        count as f64 / published_in.as_secs_f64()
    );
    println!(
        "consumed and acked {received} in {consumed_in:.2?}: {:.0} msg/s",
        received as f64 / consumed_in.as_secs_f64()
    );
    conn.close().await
}

fn tally(outcome: Confirmation, acked: &mut usize, nacked: &mut usize) {
    match outcome {
        Confirmation::Ack => *acked += 1,
        _ => *nacked += 1,
    }
}
