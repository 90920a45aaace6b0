//! Work queues (push-pull): jobs pushed to a durable queue, pulled by workers, retried with
//! a delay, dead-lettered when they keep failing.
//!
//! # Topology
//!
//! [`WorkQueue::declare`] declares, idempotently, with `P` the name prefix and `N` the name:
//!
//! ```text
//! PN                 durable queue (classic or quorum), dead-letter exchange "" → PN.dead
//! PN.dead            durable queue: jobs that failed for good, with x-last-error
//! PN.delay.<ms>      one durable queue per retry delay: x-message-ttl <ms>, dead-letter
//!                    exchange "" with routing key PN, so an expired job goes back to PN
//! ```
//!
//! # Wire sequence
//!
//! ```text
//! push:    confirm.select (once); basic.publish "" PN mandatory persistent; wait basic.ack
//!          (basic.return → Unroutable, basic.nack → Nacked)
//! worker:  basic.qos prefetch; confirm.select; basic.consume PN
//!   ok     handler returns Ok                         → basic.ack
//!   retry  handler Err, x-retry-count < max_retries   → basic.publish "" PN.delay.<ms> (or PN)
//!          with x-retry-count + 1, x-last-error; wait basic.ack; then basic.ack the delivery
//!   dead   retries used up, JobError::fatal, unreadable content type, or x-delivery-count
//!          over the poison limit → basic.publish "" PN.dead with x-last-error; wait basic.ack;
//!          then basic.ack the delivery
//!   lost   the copy was not confirmed                 → basic.nack requeue (never lost)
//! batch:   up to N deliveries or T ms; handler Ok → one basic.ack multiple
//! ```
//!
//! Nothing is acked before its retry or dead-letter copy is confirmed, so a crash at any point
//! leaves either the original or the copy in a queue (at-least-once: a job may run twice).
//!
//! # Example
//!
//! ```no_run
//! use messaging_patterns::codec::Json;
//! use messaging_patterns::work_queue::{JobError, WorkQueue, WorkQueueOptions, WorkerOptions};
//!
//! # async fn example(conn: amqp_client::Connection) -> Result<(), messaging_patterns::work_queue::WorkQueueError> {
//! let queue = WorkQueue::declare(&conn, "thumbnails", Json::<String>::new(), WorkQueueOptions::default()).await?;
//! queue.push(&"cat.png".to_owned()).await?; // returns once the broker has it
//! let worker = queue
//!     .worker(WorkerOptions::default(), |job| async move {
//!         println!("resizing {}", job.payload);
//!         Ok::<_, JobError>(())
//!     })
//!     .await?;
//! // ...
//! worker.shutdown().await?;
//! # Ok(()) }
//! ```

mod worker;

use std::fmt;
use std::time::Duration;

use amqp_client::{Channel, Connection, FieldTable, QueueDeclareOptions};
use bytes::Bytes;

use crate::codec::{Codec, CodecError};
use crate::common::{PublishFailure, message_properties, prefixed, publish_confirmed};

pub use worker::{BatchOptions, Worker, WorkerEvent, WorkerOptions};
pub(crate) use worker::{copy_properties, copy_then_ack, delivery_count, retry_count};

/// Header counting the retries a job has had.
pub const RETRY_COUNT_HEADER: &str = "x-retry-count";
/// Header with the error of the last failed attempt (on retried and dead-lettered jobs).
pub const LAST_ERROR_HEADER: &str = "x-last-error";

/// What can go wrong with a work queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkQueueError {
    /// The client failed: a declare refused (406 for a queue that exists with other
    /// arguments), the channel or connection gone, a timeout.
    #[error(transparent)]
    Client(#[from] amqp_client::Error),
    /// The job could not be encoded.
    #[error("encoding the job: {0}")]
    Codec(#[from] CodecError),
    /// The broker refused the message (`basic.nack`).
    #[error("the broker refused the job (basic.nack)")]
    Nacked,
    /// The queue is gone: the mandatory message was returned.
    #[error("queue {0:?} does not exist")]
    Unroutable(String),
    /// A worker task ended abnormally.
    #[error("worker task failed: {0}")]
    Worker(String),
}

impl From<PublishFailure> for WorkQueueError {
    fn from(e: PublishFailure) -> Self {
        match e {
            PublishFailure::Client(e) => Self::Client(e),
            PublishFailure::Nacked => Self::Nacked,
            PublishFailure::Unroutable { routing_key, .. } => Self::Unroutable(routing_key),
        }
    }
}

/// The type of the main queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueType {
    /// A classic queue.
    #[default]
    Classic,
    /// A quorum queue: replicated, and counting deliveries in `x-delivery-count`, which the
    /// worker's poison limit reads.
    Quorum,
}

/// How failed jobs are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 dead-letters a job at its first failure.
    pub max_retries: u32,
    /// The delay before retry `n` (counting from 1) is `delays[n - 1]`, or the last one for
    /// later retries; empty retries at once. Each distinct delay gets a delay queue.
    pub delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    /// Three retries, after 1 s, 5 s and 30 s.
    fn default() -> Self {
        Self {
            max_retries: 3,
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
        }
    }
}

impl RetryPolicy {
    /// The delay before retry `n` (from 1).
    pub fn delay(&self, n: u32) -> Duration {
        let index = (n.max(1) - 1) as usize;
        self.delays
            .get(index)
            .or(self.delays.last())
            .copied()
            .unwrap_or_default()
    }
}

/// Options of [`WorkQueue::declare`].
#[derive(Clone, Debug, Default)]
pub struct WorkQueueOptions {
    /// Put before every queue name (services sharing a broker keep apart).
    pub prefix: String,
    /// The main queue's type.
    pub queue_type: QueueType,
    /// How failed jobs are retried.
    pub retry: RetryPolicy,
    /// Extra arguments for the main queue (`x-max-length`, ...).
    pub arguments: FieldTable,
}

/// The names of a work queue's queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueNames {
    /// The main queue.
    pub queue: String,
    /// The dead-letter queue.
    pub dead: String,
}

impl QueueNames {
    pub(crate) fn new(prefix: &str, name: &str) -> Self {
        let queue = prefixed(prefix, name);
        Self {
            dead: format!("{queue}.dead"),
            queue,
        }
    }

    /// The delay queue for one delay.
    pub fn delay(&self, delay: Duration) -> String {
        format!("{}.delay.{}", self.queue, delay.as_millis())
    }
}

/// A job as a handler sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Job<T> {
    /// The decoded job.
    pub payload: T,
    /// Retries before this attempt (0 on the first).
    pub retry_count: u32,
    /// Deliveries before this one that were not settled, from the broker's
    /// `x-delivery-count` (quorum queues only; 0 elsewhere).
    pub delivery_count: u32,
    /// True when the broker delivered it before (to a worker that did not settle it).
    pub redelivered: bool,
    /// The message's properties.
    pub properties: amqp_client::BasicProperties,
}

/// A handler's failure: retried, unless made with [`JobError::fatal`].
///
/// Any error converts into a retryable one, so handlers can use `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    message: String,
    retry: bool,
}

impl JobError {
    /// A failure worth retrying (a timeout, an unavailable service).
    pub fn retry(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            retry: true,
        }
    }

    /// A failure that retrying cannot fix: the job goes straight to the dead-letter queue.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            retry: false,
        }
    }

    /// The message stored in `x-last-error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the job should be retried.
    pub fn is_retryable(&self) -> bool {
        self.retry
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> Self {
        Self::retry(e)
    }
}

/// A durable work queue: push jobs, start workers.
#[derive(Clone, Debug)]
pub struct WorkQueue<C: Codec> {
    conn: Connection,
    channel: Channel,
    codec: C,
    names: QueueNames,
    options: WorkQueueOptions,
}

impl<C: Codec> WorkQueue<C> {
    /// Declares the queue, its dead-letter queue and its delay queues (see the module docs),
    /// and opens a channel in confirm mode for [`WorkQueue::push`].
    ///
    /// # Errors
    /// [`WorkQueueError::Client`] when a declare is refused, such as 406 for a queue that
    /// exists with other arguments.
    pub async fn declare(
        conn: &Connection,
        name: &str,
        codec: C,
        options: WorkQueueOptions,
    ) -> Result<Self, WorkQueueError> {
        let names = QueueNames::new(&options.prefix, name);
        let channel = conn.open_channel().await?;
        declare_topology(&channel, &names, &options).await?;
        channel.confirm_select().await?;
        Ok(Self {
            conn: conn.clone(),
            channel,
            codec,
            names,
            options,
        })
    }

    /// The names of the queues.
    pub fn names(&self) -> &QueueNames {
        &self.names
    }

    /// Pushes a job: a persistent message with the codec's content type, returned once the
    /// broker has confirmed it.
    ///
    /// # Errors
    /// [`WorkQueueError::Unroutable`] when the queue was deleted, [`WorkQueueError::Nacked`]
    /// when the broker refused it, [`WorkQueueError::Codec`] when it cannot be encoded.
    pub async fn push(&self, job: &C::Item) -> Result<(), WorkQueueError> {
        let body = self.codec.encode(job)?;
        self.push_raw(body, message_properties(self.codec.content_type(), true))
            .await
    }

    /// Pushes a body with the caller's properties (for content the codec did not write).
    ///
    /// # Errors
    /// As [`WorkQueue::push`].
    pub async fn push_raw(
        &self,
        body: Bytes,
        properties: amqp_client::BasicProperties,
    ) -> Result<(), WorkQueueError> {
        publish_confirmed(&self.channel, "", &self.names.queue, true, properties, body).await?;
        Ok(())
    }

    /// Starts a worker that runs `handler` for each job, up to `options.concurrency` at once.
    ///
    /// # Errors
    /// When its channel cannot be opened or the consume is refused.
    pub async fn worker<H, F>(
        &self,
        options: WorkerOptions,
        handler: H,
    ) -> Result<Worker, WorkQueueError>
    where
        H: Fn(Job<C::Item>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        worker::start(self.context(), options, handler).await
    }

    /// Starts a worker that takes jobs in batches of up to `options.max_size`, or whatever
    /// arrived within `options.max_wait` of a batch's first job, and acks a handled batch
    /// with one `basic.ack` (multiple). When the handler fails, each job of the batch is
    /// retried or dead-lettered on its own. Batches run one at a time per worker.
    ///
    /// # Errors
    /// When its channel cannot be opened or the consume is refused.
    pub async fn batch_worker<H, F>(
        &self,
        options: BatchOptions,
        handler: H,
    ) -> Result<Worker, WorkQueueError>
    where
        H: Fn(Vec<Job<C::Item>>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        worker::start_batch(self.context(), options, handler).await
    }

    /// Deletes the queue, its dead-letter queue and its delay queues, with their messages.
    ///
    /// # Errors
    /// When a delete is refused.
    pub async fn delete(self) -> Result<(), WorkQueueError> {
        let mut queues = vec![self.names.queue.clone(), self.names.dead.clone()];
        for delay in delays(&self.options.retry) {
            queues.push(self.names.delay(delay));
        }
        for queue in queues {
            self.channel
                .queue_delete(&queue, Default::default())
                .await?;
        }
        self.channel.close().await?;
        Ok(())
    }

    fn context(&self) -> worker::Context<C> {
        worker::Context {
            conn: self.conn.clone(),
            codec: self.codec.clone(),
            names: self.names.clone(),
            retry: self.options.retry.clone(),
        }
    }
}

/// The distinct non-zero delays of a policy.
pub(crate) fn delays(policy: &RetryPolicy) -> Vec<Duration> {
    let mut delays: Vec<Duration> = policy
        .delays
        .iter()
        .copied()
        .filter(|d| !d.is_zero())
        .collect();
    delays.sort();
    delays.dedup();
    delays
}

async fn declare_topology(
    channel: &Channel,
    names: &QueueNames,
    options: &WorkQueueOptions,
) -> Result<(), WorkQueueError> {
    let durable = |arguments| QueueDeclareOptions {
        durable: true,
        arguments,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(&names.dead, durable(FieldTable::new()))
        .await?;
    let mut main = options.arguments.clone();
    main.insert("x-dead-letter-exchange", "");
    main.insert("x-dead-letter-routing-key", names.dead.as_str());
    if options.queue_type == QueueType::Quorum {
        main.insert("x-queue-type", "quorum");
    }
    channel.queue_declare(&names.queue, durable(main)).await?;
    declare_delay_queues(channel, names, &options.retry).await?;
    Ok(())
}

/// Declares a delay queue per distinct delay of `retry`: a message expires there after its
/// delay and is dead-lettered back to `names.queue`.
pub(crate) async fn declare_delay_queues(
    channel: &Channel,
    names: &QueueNames,
    retry: &RetryPolicy,
) -> Result<(), amqp_client::Error> {
    for delay in delays(retry) {
        let mut args = FieldTable::new();
        let ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl", ms);
        args.insert("x-dead-letter-exchange", "");
        args.insert("x-dead-letter-routing-key", names.queue.as_str());
        let options = QueueDeclareOptions {
            durable: true,
            arguments: args,
            ..QueueDeclareOptions::default()
        };
        channel.queue_declare(&names.delay(delay), options).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_repeat_the_last() {
        let policy = RetryPolicy {
            max_retries: 5,
            delays: vec![Duration::from_millis(100), Duration::from_millis(500)],
        };
        assert_eq!(policy.delay(1), Duration::from_millis(100));
        assert_eq!(policy.delay(2), Duration::from_millis(500));
        assert_eq!(policy.delay(9), Duration::from_millis(500));
        assert_eq!(
            RetryPolicy {
                max_retries: 1,
                delays: vec![]
            }
            .delay(1),
            Duration::ZERO
        );
    }

    #[test]
    fn names_and_distinct_delays() {
        let names = QueueNames::new("svc.", "jobs");
        assert_eq!(names.queue, "svc.jobs");
        assert_eq!(names.dead, "svc.jobs.dead");
        assert_eq!(names.delay(Duration::from_secs(2)), "svc.jobs.delay.2000");
        let policy = RetryPolicy {
            max_retries: 3,
            delays: vec![
                Duration::from_secs(1),
                Duration::ZERO,
                Duration::from_secs(1),
            ],
        };
        assert_eq!(delays(&policy), vec![Duration::from_secs(1)]);
    }

    #[test]
    fn job_errors() {
        let e: JobError = std::io::Error::other("disk").into();
        assert!(e.is_retryable());
        assert_eq!(e.message(), "disk");
        assert!(!JobError::fatal("bad input").is_retryable());
    }
}
