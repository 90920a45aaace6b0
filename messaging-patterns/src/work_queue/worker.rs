//! Workers: consume, run the handler, then ack, retry or dead-letter.

use std::sync::Arc;
use std::time::Duration;

use amqp_client::{BasicProperties, Channel, Connection, Consumer, Delivery};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{
    Job, JobError, LAST_ERROR_HEADER, QueueNames, RETRY_COUNT_HEADER, RetryPolicy, WorkQueueError,
};
use crate::codec::Codec;
use crate::common::{
    PublishFailure, catch_panic, consume_concurrently, content_type, finish, header_int,
    headers_mut, next_or_stop, publish_confirmed,
};

/// RabbitMQ's default `consumer_timeout`: 30 minutes.
const BROKER_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a worker waits before requeueing a job whose copy was not confirmed.
const REQUEUE_PAUSE: Duration = Duration::from_millis(100);
/// Events buffered for a slow listener of [`Worker::events`].
const EVENT_QUEUE: usize = 1024;
/// Quorum queues count failed deliveries in this header (acquisitions up to RabbitMQ 4.2).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// RabbitMQ 4.3+ counts acquisitions here, `x-delivery-count` only explicit failures.
const ACQUIRED_COUNT_HEADER: &str = "x-acquired-count";

/// Options of [`super::WorkQueue::worker`].
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Deliveries the broker sends ahead (`basic.qos`); raised to `concurrency` if lower.
    pub prefetch: u16,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Dead-letter a job, without running the handler, once the broker has delivered it this
    /// many times without it being settled: a poison job that crashes its worker. Read from
    /// `x-delivery-count` (and `x-acquired-count`), which only quorum queues set.
    pub poison_limit: Option<u32>,
    /// The broker's consumer timeout (RabbitMQ's `consumer_timeout`, 30 min by default): a
    /// job still running at 80% of it is reported with a warning and
    /// [`WorkerEvent::ConsumerTimeoutNear`], before the broker would close the channel.
    pub consumer_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            prefetch: 10,
            concurrency: 1,
            poison_limit: None,
            consumer_timeout: BROKER_CONSUMER_TIMEOUT,
        }
    }
}

/// Options of [`super::WorkQueue::batch_worker`].
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// The most jobs in one batch (also the prefetch count).
    pub max_size: u16,
    /// How long a batch waits for more jobs after its first.
    pub max_wait: Duration,
    /// As [`WorkerOptions::poison_limit`].
    pub poison_limit: Option<u32>,
    /// As [`WorkerOptions::consumer_timeout`].
    pub consumer_timeout: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_size: 100,
            max_wait: Duration::from_millis(200),
            poison_limit: None,
            consumer_timeout: BROKER_CONSUMER_TIMEOUT,
        }
    }
}

/// What a worker did with a job that did not simply succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// The job failed and was published to be retried (after `delay`).
    Retried {
        /// Which retry this is (from 1).
        retry: u32,
        /// The delay before it runs again.
        delay: Duration,
        /// The handler's error.
        error: String,
    },
    /// The job went to the dead-letter queue.
    DeadLettered {
        /// Why: the last error, an unreadable content type, or the poison limit.
        reason: String,
    },
    /// The retry or dead-letter copy was not confirmed: the job was requeued instead.
    Requeued {
        /// Why the copy failed.
        error: String,
    },
    /// A job has run for 80% of the broker's consumer timeout.
    ConsumerTimeoutNear {
        /// Its delivery tag.
        delivery_tag: u64,
        /// How long it has run.
        elapsed: Duration,
    },
}

/// What the work queue hands its workers.
pub(super) struct Context<C> {
    pub(super) conn: Connection,
    pub(super) codec: C,
    pub(super) names: QueueNames,
    pub(super) retry: RetryPolicy,
}

/// A running worker. Dropping it stops it as [`Worker::shutdown`] does, in the background.
#[derive(Debug)]
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), WorkQueueError>>,
    events: broadcast::Sender<WorkerEvent>,
}

impl Worker {
    /// The worker's events from now on (retries, dead letters, slow jobs).
    pub fn events(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// True once the worker has stopped (its consumer was cancelled or its channel closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the worker: cancels its consumer, hands the jobs it had prefetched but not
    /// started back to the queue, waits for the running handlers to finish and settles their
    /// jobs, then closes its channel.
    ///
    /// # Errors
    /// The error that stopped the worker earlier, if one did (its channel closed).
    pub async fn shutdown(self) -> Result<(), WorkQueueError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(WorkQueueError::Worker(e.to_string())),
        }
    }
}

/// Settles deliveries: the shared part of single and batch workers.
struct Processor<C> {
    channel: Channel,
    codec: C,
    names: QueueNames,
    retry: RetryPolicy,
    poison_limit: Option<u32>,
    warn_after: Duration,
    events: broadcast::Sender<WorkerEvent>,
}

/// A channel with the given prefetch, in confirm mode for retry and dead-letter copies, and
/// its consumer.
async fn open(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
) -> Result<(Channel, Consumer), WorkQueueError> {
    let channel = conn.open_channel().await?;
    channel.qos(prefetch.max(1), false).await?;
    channel.confirm_select().await?;
    let consumer = channel.consume(queue, Default::default()).await?;
    Ok((channel, consumer))
}

fn processor<C: Codec>(
    cx: Context<C>,
    channel: Channel,
    poison_limit: Option<u32>,
    consumer_timeout: Duration,
) -> Processor<C> {
    Processor {
        channel,
        codec: cx.codec,
        names: cx.names,
        retry: cx.retry,
        poison_limit,
        warn_after: consumer_timeout.mul_f64(0.8),
        events: broadcast::channel(EVENT_QUEUE).0,
    }
}

pub(super) async fn start<C, H, F>(
    cx: Context<C>,
    options: WorkerOptions,
    handler: H,
) -> Result<Worker, WorkQueueError>
where
    C: Codec,
    H: Fn(Job<C::Item>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let concurrency = options.concurrency.max(1);
    let prefetch = options
        .prefetch
        .max(u16::try_from(concurrency).unwrap_or(u16::MAX));
    let (channel, consumer) = open(&cx.conn, &cx.names.queue, prefetch).await?;
    let processor = Arc::new(processor(
        cx,
        channel,
        options.poison_limit,
        options.consumer_timeout,
    ));
    let events = processor.events.clone();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(
        consumer,
        processor,
        Arc::new(handler),
        concurrency,
        stopped,
    ));
    Ok(Worker { stop, task, events })
}

pub(super) async fn start_batch<C, H, F>(
    cx: Context<C>,
    options: BatchOptions,
    handler: H,
) -> Result<Worker, WorkQueueError>
where
    C: Codec,
    H: Fn(Vec<Job<C::Item>>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let max_size = options.max_size.max(1);
    let (channel, consumer) = open(&cx.conn, &cx.names.queue, max_size).await?;
    let processor = processor(cx, channel, options.poison_limit, options.consumer_timeout);
    let events = processor.events.clone();
    let (stop, stopped) = watch::channel(false);
    let limits = (usize::from(max_size), options.max_wait);
    let task = tokio::spawn(run_batches(consumer, processor, handler, limits, stopped));
    Ok(Worker { stop, task, events })
}

async fn run<C, H, F>(
    consumer: Consumer,
    processor: Arc<Processor<C>>,
    handler: Arc<H>,
    concurrency: usize,
    stop: watch::Receiver<bool>,
) -> Result<(), WorkQueueError>
where
    C: Codec,
    H: Fn(Job<C::Item>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), JobError>> + Send + 'static,
{
    consume_concurrently(
        consumer,
        &processor.channel,
        concurrency,
        stop,
        |delivery| {
            let (processor, handler) = (processor.clone(), handler.clone());
            async move { processor.handle_one(delivery, &*handler).await }
        },
    )
    .await
    .map_err(Into::into)
}

async fn run_batches<C, H, F>(
    mut consumer: Consumer,
    processor: Processor<C>,
    handler: H,
    (max_size, max_wait): (usize, Duration),
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkQueueError>
where
    C: Codec,
    H: Fn(Vec<Job<C::Item>>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let mut result = Ok(());
    while result.is_ok() && !*stop.borrow() {
        let mut batch = Vec::with_capacity(max_size);
        let deadline = Instant::now() + max_wait;
        while batch.len() < max_size {
            let more = tokio::select! {
                next = next_or_stop(&mut consumer, &mut stop) => next,
                () = tokio::time::sleep_until(deadline), if !batch.is_empty() => break,
            };
            match more {
                Some(Ok(delivery)) => batch.push(delivery),
                Some(Err(e)) => {
                    result = Err(e.into());
                    break;
                }
                None => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        processor.handle_batch(batch, &handler).await;
    }
    finish(consumer, &processor.channel, async {}).await;
    result
}

impl<C: Codec> Processor<C> {
    fn emit(&self, event: WorkerEvent) {
        // No listener is fine: events are optional.
        let _ = self.events.send(event);
    }

    /// Decodes a delivery into a job; an unreadable or poison one is dead-lettered here.
    async fn admit(&self, delivery: &Delivery) -> Option<Job<C::Item>> {
        let props = &delivery.properties;
        let delivery_count = delivery_count(props);
        if let Some(limit) = self.poison_limit.filter(|l| delivery_count >= *l) {
            let reason = format!(
                "poison message: delivered {delivery_count} times without being settled (limit {limit})"
            );
            self.dead_letter(delivery, &reason).await;
            return None;
        }
        match self
            .codec
            .decode(content_type(props), delivery.body.clone())
        {
            Ok(payload) => Some(Job {
                payload,
                retry_count: retry_count(props),
                delivery_count,
                redelivered: delivery.redelivered,
                properties: props.clone(),
            }),
            Err(e) => {
                self.dead_letter(delivery, &format!("unreadable message: {e}"))
                    .await;
                None
            }
        }
    }

    async fn handle_one<H, F>(&self, delivery: Delivery, handler: &H)
    where
        H: Fn(Job<C::Item>) -> F,
        F: Future<Output = Result<(), JobError>>,
    {
        let Some(job) = self.admit(&delivery).await else {
            return;
        };
        let retries = job.retry_count;
        let outcome = self
            .watch(
                delivery.delivery_tag.0,
                guarded(async { handler(job).await }),
            )
            .await;
        match outcome {
            Ok(()) => settle(delivery.ack().await),
            Err(error) => self.fail(&delivery, retries, &error).await,
        }
    }

    async fn handle_batch<H, F>(&self, batch: Vec<Delivery>, handler: &H)
    where
        H: Fn(Vec<Job<C::Item>>) -> F,
        F: Future<Output = Result<(), JobError>>,
    {
        let mut jobs = Vec::with_capacity(batch.len());
        let mut admitted = Vec::with_capacity(batch.len());
        for delivery in batch {
            if let Some(job) = self.admit(&delivery).await {
                jobs.push(job);
                admitted.push(delivery);
            }
        }
        let retries: Vec<u32> = jobs.iter().map(|j| j.retry_count).collect();
        let Some(last) = admitted.last() else { return };
        let tag = last.delivery_tag.0;
        match self
            .watch(tag, guarded(async { handler(jobs).await }))
            .await
        {
            // Every earlier delivery of this channel is settled already (deliveries come in
            // tag order and batches run one at a time), so one multiple ack covers the batch.
            Ok(()) => settle(last.ack_multiple().await),
            Err(error) => {
                let failures = admitted
                    .iter()
                    .zip(retries)
                    .map(|(delivery, n)| self.fail(delivery, n, &error));
                futures_util::future::join_all(failures).await;
            }
        }
    }

    /// Runs a handler, warning once when it nears the broker's consumer timeout.
    async fn watch<T>(&self, delivery_tag: u64, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let mut work = std::pin::pin!(work);
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(self.warn_after) => {}
        }
        let elapsed = started.elapsed();
        tracing::warn!(
            queue = %self.names.queue,
            delivery_tag,
            ?elapsed,
            "job still running near the broker's consumer timeout; the broker will close the \
             channel and requeue it if it is not acked in time"
        );
        self.emit(WorkerEvent::ConsumerTimeoutNear {
            delivery_tag,
            elapsed,
        });
        work.await
    }

    /// Retries or dead-letters a failed job.
    async fn fail(&self, delivery: &Delivery, retries: u32, error: &JobError) {
        if !error.is_retryable() || retries >= self.retry.max_retries {
            return self.dead_letter(delivery, error.message()).await;
        }
        let retry = retries + 1;
        let delay = self.retry.delay(retry);
        let target = if delay.is_zero() {
            self.names.queue.clone()
        } else {
            self.names.delay(delay)
        };
        let mut props = copy_properties(&delivery.properties, error.message());
        headers_mut(&mut props).insert(RETRY_COUNT_HEADER, i64::from(retry));
        tracing::info!(queue = %self.names.queue, retry, ?delay, error = %error, "retrying job");
        if self.copy_then_ack(delivery, &target, props).await {
            self.emit(WorkerEvent::Retried {
                retry,
                delay,
                error: error.message().to_owned(),
            });
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) {
        tracing::warn!(queue = %self.names.queue, reason, "dead-lettering job");
        let props = copy_properties(&delivery.properties, reason);
        if self.copy_then_ack(delivery, &self.names.dead, props).await {
            self.emit(WorkerEvent::DeadLettered {
                reason: reason.to_owned(),
            });
        }
    }

    /// Publishes a copy and acks the original once the copy is confirmed; requeues the
    /// original otherwise. True when the copy was confirmed.
    async fn copy_then_ack(
        &self,
        delivery: &Delivery,
        queue: &str,
        props: BasicProperties,
    ) -> bool {
        match copy_then_ack(&self.channel, delivery, queue, props).await {
            Ok(()) => true,
            Err(e) => {
                self.emit(WorkerEvent::Requeued {
                    error: e.to_string(),
                });
                false
            }
        }
    }
}

/// Publishes a copy of `delivery` to `queue` and acks the original once the copy is
/// confirmed; requeues the original (after a pause) otherwise, so nothing is lost.
pub(crate) async fn copy_then_ack(
    channel: &Channel,
    delivery: &Delivery,
    queue: &str,
    props: BasicProperties,
) -> Result<(), PublishFailure> {
    let body = delivery.body.clone();
    match publish_confirmed(channel, "", queue, true, props, body).await {
        Ok(()) => {
            settle(delivery.ack().await);
            Ok(())
        }
        Err(e) => {
            tracing::error!(queue, error = %e, "copy not confirmed; requeueing the message");
            // A pause, so that a missing queue does not become a hot redelivery loop.
            tokio::time::sleep(REQUEUE_PAUSE).await;
            settle(delivery.nack(true).await);
            Err(e)
        }
    }
}

/// Deliveries before this one that were not settled, from the broker's `x-delivery-count`
/// or `x-acquired-count` (quorum queues only; 0 elsewhere).
pub(crate) fn delivery_count(props: &BasicProperties) -> u32 {
    let count = header_int(props, DELIVERY_COUNT_HEADER)
        .max(header_int(props, ACQUIRED_COUNT_HEADER))
        .unwrap_or(0);
    u32::try_from(count).unwrap_or(0)
}

/// The handler's outcome, a panic turned into a retryable error.
async fn guarded(work: impl Future<Output = Result<(), JobError>>) -> Result<(), JobError> {
    catch_panic(work)
        .await
        .unwrap_or_else(|panic| Err(JobError::retry(panic)))
}

pub(crate) fn retry_count(props: &BasicProperties) -> u32 {
    header_int(props, RETRY_COUNT_HEADER)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// The properties of a retry or dead-letter copy: the original's, with the error, without the
/// broker's delivery counters (a copy is a new message: a stale count would make it look
/// poisoned).
pub(crate) fn copy_properties(original: &BasicProperties, error: &str) -> BasicProperties {
    let mut props = original.clone();
    let headers = headers_mut(&mut props);
    headers.remove(DELIVERY_COUNT_HEADER);
    headers.remove(ACQUIRED_COUNT_HEADER);
    headers.insert(LAST_ERROR_HEADER, error);
    props.delivery_mode = Some(BasicProperties::PERSISTENT);
    props
}

/// Logs a settle that failed: the channel is gone, and the broker requeues the delivery.
fn settle(result: amqp_client::Result<()>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not settle a job; the broker will redeliver it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::header_str;

    #[test]
    fn copies_drop_broker_counters_and_carry_the_error() {
        let mut original = BasicProperties::default();
        headers_mut(&mut original).insert(DELIVERY_COUNT_HEADER, 4i64);
        headers_mut(&mut original).insert(ACQUIRED_COUNT_HEADER, 4i64);
        headers_mut(&mut original).insert(RETRY_COUNT_HEADER, 2i64);
        let copy = copy_properties(&original, "boom");
        assert_eq!(header_int(&copy, DELIVERY_COUNT_HEADER), None);
        assert_eq!(header_int(&copy, ACQUIRED_COUNT_HEADER), None);
        assert_eq!(retry_count(&copy), 2);
        assert_eq!(header_str(&copy, LAST_ERROR_HEADER), Some("boom"));
        assert!(copy.is_persistent());
    }

    #[tokio::test]
    async fn panics_become_retryable_errors() {
        let outcome = guarded(async {
            if true {
                panic!("kaboom");
            }
            Ok(())
        })
        .await;
        let error = outcome.unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(error.message(), "handler panicked: kaboom");
    }
}
