//! A work queue: jobs pushed with confirms, a worker with retries and a dead-letter queue.
//!
//! `cargo run -p messaging-patterns --example work_queue` (RabbitMQ at `AMQP_URL`).

use std::time::Duration;

use messaging_patterns::codec::Json;
use messaging_patterns::work_queue::{
    JobError, RetryPolicy, WorkQueue, WorkQueueOptions, WorkerEvent, WorkerOptions,
};

#[derive(serde::Serialize, serde::Deserialize)]
struct Email {
    to: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let conn = amqp_client::Connection::connect(&url).await?;
    let options = WorkQueueOptions {
        prefix: "example.".into(),
        retry: RetryPolicy {
            max_retries: 2,
            delays: vec![Duration::from_millis(200)],
        },
        ..Default::default()
    };
    let emails = WorkQueue::declare(&conn, "emails", Json::<Email>::new(), options).await?;
    for to in ["ann@example.com", "bounce@example.com"] {
        emails.push(&Email { to: to.into() }).await?;
    }

    let worker = emails
        .worker(
            WorkerOptions {
                concurrency: 4,
                ..Default::default()
            },
            |job| async move {
                if job.payload.to.starts_with("bounce") {
                    return Err(JobError::retry(format!(
                        "mailbox of {} unavailable",
                        job.payload.to
                    )));
                }
                println!("sent to {} (retry {})", job.payload.to, job.retry_count);
                Ok(())
            },
        )
        .await?;
    let mut events = worker.events();
    while let Ok(event) = events.recv().await {
        println!("{event:?}");
        if matches!(event, WorkerEvent::DeadLettered { .. }) {
            break;
        }
    }
    worker.shutdown().await?;
    emails.delete().await?;
    conn.close().await?;
    Ok(())
}
