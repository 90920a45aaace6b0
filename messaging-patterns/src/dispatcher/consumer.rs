//! One configured consumer: an AMQP consumer, its [`Router`], a pool of handler instances,
//! a [`Publisher`] channel of its own, and its [`FailurePolicy`].
//!
//! Shutdown: the router cancels the consumer and requeues what it buffered and parked; the
//! instances finish the message they run (until the deadline), settle it, and stop; what is
//! left in the work queue is requeued; the channels close (the broker requeues anything
//! still unacked, such as the message of an instance cut off by the deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use amqp_client::{BasicProperties, Connection, ShortStr};
use bytes::Bytes;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use super::config::ConsumerConfig;
use super::failure::FailurePolicy;
use super::handler::{DynHandler, Factory, Failure, MessageHandle, reply_to};
use super::publisher::Publisher;
use super::router::{CurrentChannel, Router, Work, log_settle, subscribe};
use crate::common::{catch_panic, stopped};
use crate::rpc::Envelope;

type WorkQueue = Arc<Mutex<mpsc::Receiver<Work>>>;

/// A running consumer.
pub(crate) struct Pool {
    pub(crate) name: String,
    /// True while the consumer is registered with the broker.
    pub(crate) ready: Arc<AtomicBool>,
    channel: CurrentChannel,
    publisher: Publisher,
    stop: watch::Sender<bool>,
    router: tokio::task::JoinHandle<Result<(), amqp_client::Error>>,
    instances: JoinSet<()>,
    work: WorkQueue,
}

/// What every instance of a pool shares.
struct Shared {
    config: Arc<ConsumerConfig>,
    publisher: Publisher,
    failures: FailurePolicy,
    factory: Factory,
    work: WorkQueue,
    done: mpsc::UnboundedSender<Option<String>>,
    stop: watch::Receiver<bool>,
}

/// Declares the consumer's dead-letter (and delay) queues, opens its channel (prefetch),
/// starts consuming, and starts the router and the instances.
pub(crate) async fn start(
    conn: &Connection,
    config: Arc<ConsumerConfig>,
    factory: Factory,
) -> Result<Pool, amqp_client::Error> {
    let failures = FailurePolicy::new(&config);
    failures.declare(conn).await?;
    let (channel, consumer) = subscribe(conn, &config).await?;
    let channel = Arc::new(std::sync::Mutex::new(channel));
    let count = config.consumer_count.get();
    let (work_tx, work_rx) = mpsc::channel(count);
    let work = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));
    let router = Router {
        conn: conn.clone(),
        config: config.clone(),
        channel: channel.clone(),
        ready: ready.clone(),
        busy: Default::default(),
        work: work_tx,
        stop: stopped.clone(),
    };
    let router = tokio::spawn(router.run(consumer, done_rx));
    let publisher = Publisher::new(conn);
    let shared = Arc::new(Shared {
        config: config.clone(),
        publisher: publisher.clone(),
        failures,
        factory,
        work: work.clone(),
        done: done_tx,
        stop: stopped,
    });
    let mut instances = JoinSet::new();
    for _ in 0..count {
        instances.spawn(instance(shared.clone()));
    }
    tracing::info!(consumer = %config.name, queue = %config.queue, instances = count, prefetch = config.prefetch_count.get(), "consuming");
    Ok(Pool {
        name: config.name.clone(),
        ready,
        channel,
        publisher,
        stop,
        router,
        instances,
        work,
    })
}

impl Pool {
    /// Waits until the router ends by itself: the consumer was cancelled by the broker and
    /// may not consume again, or the connection is gone. Never returns while the pool runs
    /// normally.
    pub(crate) async fn failed(&mut self) -> amqp_client::Error {
        match (&mut self.router).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => amqp_client::Error::ConsumerCancelled(self.name.clone()),
            Err(e) => amqp_client::Error::ConsumerCancelled(format!("{}: {e}", self.name)),
        }
    }

    /// Stops gracefully (see the module docs), giving running handlers until `deadline`.
    pub(crate) async fn shutdown(mut self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(true);
        if !self.router.is_finished() {
            if let Err(e) = (&mut self.router).await {
                tracing::warn!(consumer = %self.name, error = %e, "router task failed");
            }
        }
        let finished = tokio::time::timeout_at(deadline, async {
            while self.instances.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(consumer = %self.name, "handlers still running at the shutdown deadline; their messages go back to the queue");
            self.instances.abort_all();
            while self.instances.join_next().await.is_some() {}
        }
        let mut work = self.work.lock().await;
        work.close();
        while let Ok(left) = work.try_recv() {
            log_settle(left.delivery.nack(true).await);
        }
        let channel = self.channel.lock().ok().map(|c| c.clone());
        if let Some(channel) = channel {
            if let Err(e) = channel.close().await {
                tracing::debug!(consumer = %self.name, error = %e, "closing the consumer's channel");
            }
        }
        self.publisher.close().await;
        tracing::info!(consumer = %self.name, "stopped");
    }
}

/// One instance: handles messages until shutdown; when its handler fails or panics, it is
/// shut down and a fresh one takes its place after the pause (a self-replacing handler is
/// kept, and only the pause taken).
async fn instance(shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    loop {
        let mut handler = (shared.factory)();
        let failure = serve(&shared, &mut *handler, &mut stop).await;
        if catch_panic(handler.shutdown()).await.is_err() {
            tracing::warn!(consumer = %shared.config.name, "handler panicked in shutdown");
        }
        let Some(error) = failure else { return };
        tracing::warn!(consumer = %shared.config.name, %error, pause = ?shared.config.restart_pause, "handler failed; replacing the instance");
        if !pause(&shared, &mut stop).await {
            return;
        }
    }
}

/// Waits out the restart pause; false when asked to stop meanwhile.
async fn pause(shared: &Shared, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(shared.config.restart_pause) => true,
        () = stopped(stop) => false,
    }
}

/// Runs one handler instance until shutdown (`None`) or its failure (`Some(error)`).
async fn serve(
    shared: &Shared,
    handler: &mut dyn DynHandler,
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    loop {
        let work = next_work(&shared.work, stop).await?;
        let failure = shared.handle(work.delivery, handler).await;
        // Only now, with the message settled, may the next one with its key start.
        let _ = shared.done.send(work.key);
        let Some(error) = failure else { continue };
        if !handler.self_replacing() {
            return Some(error);
        }
        tracing::warn!(consumer = %shared.config.name, %error, pause = ?shared.config.restart_pause, "handler failed; its worker replaced the instance");
        if !pause(shared, stop).await {
            return None;
        }
    }
}

impl Shared {
    /// Handles and settles one delivery; the handler's error when it failed.
    async fn handle(
        &self,
        delivery: amqp_client::Delivery,
        handler: &mut dyn DynHandler,
    ) -> Option<String> {
        if let Some(reason) = self.failures.exhausted(&delivery) {
            self.failures
                .dead_letter(&delivery, &reason, &self.publisher)
                .await;
            return None;
        }
        let handle = MessageHandle::new(delivery, self.publisher.clone());
        let outcome = catch_panic(handler.consume(handle.message(), &handle))
            .await
            .unwrap_or_else(|panic| Err(Failure::Handler(panic)));
        let failure = match outcome {
            Ok(()) => {
                handle.ack_unless_settled().await;
                return None;
            }
            Err(failure) => failure,
        };
        if self.config.rpc {
            self.reply_failure(&handle, failure.message()).await;
        }
        if !handle.is_settled() {
            match &failure {
                Failure::Undeliverable(reason) => {
                    let reason = format!("cannot be handed to the handler: {reason}");
                    self.failures
                        .dead_letter(handle.delivery(), &reason, &self.publisher)
                        .await;
                }
                Failure::Handler(error) => {
                    self.failures
                        .failed(handle.delivery(), error, &self.publisher)
                        .await;
                }
            }
        }
        match failure {
            Failure::Handler(error) => Some(error),
            Failure::Undeliverable(_) => None,
        }
    }

    /// Answers an RPC request whose handler failed with a failure envelope, when its
    /// `reply_to` is one this consumer may answer to.
    async fn reply_failure(&self, handle: &MessageHandle, error: &str) {
        let props = &handle.delivery().properties;
        let Some(reply_to) = reply_to(props).filter(|r| self.config.reply_allowed(r)) else {
            return;
        };
        let body = match serde_json::to_vec(&Envelope::<serde_json::Value>::error(error)) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "encoding a failure envelope");
                return;
            }
        };
        let reply = BasicProperties {
            content_type: Some(ShortStr::from_static("application/json")),
            correlation_id: props.correlation_id.clone(),
            ..Default::default()
        };
        if let Err(e) = self
            .publisher
            .publish("", reply_to, false, reply, body)
            .await
        {
            tracing::warn!(consumer = %self.config.name, error = %e, "could not send the failure reply");
        }
    }
}

/// The next message for an instance, or `None` on shutdown.
async fn next_work(work: &WorkQueue, stop: &mut watch::Receiver<bool>) -> Option<Work> {
    tokio::select! {
        biased;
        () = stopped(stop) => None,
        work = async { work.lock().await.recv().await } => work,
    }
}

/// The readiness of a pool, for `/readyz`.
pub(crate) fn is_ready(ready: &AtomicBool) -> bool {
    ready.load(Ordering::Acquire)
}
