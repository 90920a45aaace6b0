//! The four things every service does over RabbitMQ, on `amqp-client`'s public API:
//!
//! - [`pubsub`]: a publisher to a fanout or topic exchange, and subscriptions (exclusive
//!   auto-delete queues, or durable ones that keep messages while their subscriber is down).
//! - [`work_queue`]: jobs pushed with publisher confirms, pulled by workers with a prefetch
//!   and a concurrency limit, retried with a delay (delay queues with a TTL that dead-letter
//!   back), dead-lettered with their last error, in batches if wanted, with poison-message
//!   detection on quorum queues and a warning before the broker's consumer timeout.
//! - [`rpc`]: request-response over direct reply-to (or an exclusive reply queue), many calls
//!   in flight, per-call timeouts, unroutable requests reported.
//! - [`dispatcher`]: a long-running consumer host driven by a YAML file, also shipped as the
//!   `amqp-dispatcher` binary.
//!
//! Every pattern is one struct whose constructor declares what it needs idempotently, under
//! an optional name prefix, and is generic over a [`codec::Codec`] (JSON through serde, or raw
//! bytes) that sets `content_type` and refuses what it cannot read. Each module's docs spell
//! out the AMQP methods it sends.
//!
//! ```no_run
//! use messaging_patterns::codec::Json;
//! use messaging_patterns::work_queue::{JobError, WorkQueue, WorkQueueOptions, WorkerOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = amqp_client::Connection::connect("amqp://guest:guest@localhost:5672/%2f").await?;
//! let emails = WorkQueue::declare(&conn, "emails", Json::<String>::new(), WorkQueueOptions::default()).await?;
//! emails.push(&"hello@example.com".to_owned()).await?;
//! let worker = emails
//!     .worker(WorkerOptions::default(), |job| async move {
//!         println!("sending to {}", job.payload);
//!         Ok::<_, JobError>(())
//!     })
//!     .await?;
//! # worker.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod codec;
mod common;
pub mod dispatcher;
pub mod pubsub;
pub mod rpc;
pub mod work_queue;
