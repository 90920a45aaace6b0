//! Helpers for the tests against the real broker at `AMQP_URL`.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of this module

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use amqp_client::Connection;

pub mod dispatch;

/// `AMQP_URL`, or RabbitMQ's default on loopback.
pub fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A prefix no other test (or test run) uses: `mp-test.<tag>.<pid>.<n>.`.
pub fn prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mp-test.{tag}.{}.{}.",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects to the broker, or panics saying how to start one.
pub async fn connect() -> Connection {
    let url = url();
    Connection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "no RabbitMQ at {url} ({e}): start one with scripts/ensure-rabbitmq or \
             `docker compose up -d`, or set AMQP_URL"
        )
    })
}

/// Waits for a future, failing the test after `secs` seconds.
pub async fn within<F: Future>(secs: u64, what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// How many messages a queue holds (ready), by a passive declare.
pub async fn depth(conn: &Connection, queue: &str) -> u32 {
    let channel = conn.open_channel().await.expect("channel");
    let info = channel
        .queue_declare(
            queue,
            amqp_client::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .expect("passive declare");
    channel.close().await.expect("close");
    info.message_count
}
