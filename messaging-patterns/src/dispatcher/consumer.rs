//! One configured consumer: an AMQP consumer, a router that holds exclusivity keys, and a
//! pool of handler instances.
//!
//! ```text
//!  basic.deliver ──▶ router ──(key free)──▶ work queue ──▶ instance 1..consumer_count
//!                      │  ▲                                   │
//!                      │  └────────── done(key) ◀─────────────┘  (after the settle)
//!                      └─(key busy)─▶ parked, per key, in arrival order
//! ```
//!
//! Shutdown: the router cancels the consumer and requeues what it buffered and parked; the
//! instances finish the message they run (until the deadline), settle it, and stop; what is
//! left in the work queue is requeued; the channel closes (the broker requeues anything
//! still unacked, such as the message of an instance cut off by the deadline).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use amqp_client::{Channel, Connection, Consumer, Delivery};
use futures_util::StreamExt;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use super::config::{ConsumerConfig, ExclusivityKey};
use super::handler::{DynHandler, Factory, MessageHandle};
use crate::common::{catch_panic, header_str, stopped};

/// A delivery on its way to an instance, with the exclusivity key it holds.
struct Work {
    delivery: Delivery,
    key: Option<String>,
}

type WorkQueue = Arc<Mutex<mpsc::Receiver<Work>>>;

/// A running consumer.
pub(crate) struct Pool {
    pub(crate) name: String,
    channel: Channel,
    stop: watch::Sender<bool>,
    router: tokio::task::JoinHandle<Result<(), amqp_client::Error>>,
    instances: JoinSet<()>,
    work: WorkQueue,
}

/// What every instance of a pool shares.
struct Shared {
    name: String,
    channel: Channel,
    factory: Factory,
    restart_pause: Duration,
    work: WorkQueue,
    done: mpsc::UnboundedSender<Option<String>>,
    stop: watch::Receiver<bool>,
}

/// Opens the consumer's channel (prefetch, confirm mode for handlers' publishes), starts
/// consuming, and starts the router and the instances.
pub(crate) async fn start(
    conn: &Connection,
    config: &ConsumerConfig,
    factory: Factory,
) -> Result<Pool, amqp_client::Error> {
    let channel = conn.open_channel().await?;
    channel.qos(config.prefetch_count.get(), false).await?;
    channel.confirm_select().await?;
    let consumer = channel.consume(&config.queue, Default::default()).await?;
    let count = config.consumer_count.get();
    let (work_tx, work_rx) = mpsc::channel(count);
    let work = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let router = Router {
        key: config.exclusivity_key.clone(),
        busy: HashMap::new(),
        work: work_tx,
        stop: stopped.clone(),
    };
    let router = tokio::spawn(router.run(consumer, done_rx));
    let shared = Arc::new(Shared {
        name: config.name.clone(),
        channel: channel.clone(),
        factory,
        restart_pause: config.restart_pause,
        work: work.clone(),
        done: done_tx,
        stop: stopped,
    });
    let mut instances = JoinSet::new();
    for _ in 0..count {
        instances.spawn(instance(shared.clone()));
    }
    tracing::info!(consumer = %config.name, queue = %config.queue, instances = count, "consuming");
    Ok(Pool {
        name: config.name.clone(),
        channel,
        stop,
        router,
        instances,
        work,
    })
}

impl Pool {
    /// Waits until the router ends by itself: the consumer was cancelled by the broker or its
    /// channel closed. Never returns while the pool runs normally.
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
        if let Err(e) = self.channel.close().await {
            tracing::debug!(consumer = %self.name, error = %e, "closing the consumer's channel");
        }
        tracing::info!(consumer = %self.name, "stopped");
    }
}

/// Holds the exclusivity keys: a key is busy from the moment its message goes to an
/// instance until the instance reports it settled.
struct Router {
    key: Option<ExclusivityKey>,
    /// Busy keys, with the deliveries waiting for each.
    busy: HashMap<String, VecDeque<Delivery>>,
    work: mpsc::Sender<Work>,
    stop: watch::Receiver<bool>,
}

impl Router {
    async fn run(
        mut self,
        mut consumer: Consumer,
        mut done: mpsc::UnboundedReceiver<Option<String>>,
    ) -> Result<(), amqp_client::Error> {
        let mut stop = self.stop.clone();
        let result = loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break Ok(()),
                Some(key) = done.recv() => self.release(key).await,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.route(delivery).await,
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                },
            }
        };
        if let Err(e) = consumer.cancel().await {
            tracing::debug!(error = %e, "cancelling the dispatcher's consumer");
        }
        // Dropping the consumer requeues what it buffered; parked deliveries go back too.
        drop(consumer);
        for (_, parked) in self.busy.drain() {
            for delivery in parked {
                log_settle(delivery.nack(true).await);
            }
        }
        result
    }

    async fn route(&mut self, delivery: Delivery) {
        let key = self.key.as_ref().and_then(|k| key_of(k, &delivery));
        if let Some(key) = &key {
            if let Some(parked) = self.busy.get_mut(key) {
                parked.push_back(delivery);
                return;
            }
            self.busy.insert(key.clone(), VecDeque::new());
        }
        self.send(Work { delivery, key }).await;
    }

    async fn release(&mut self, key: Option<String>) {
        let Some(key) = key else { return };
        let next = self.busy.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(delivery) => {
                self.send(Work {
                    delivery,
                    key: Some(key),
                })
                .await;
            }
            None => {
                self.busy.remove(&key);
            }
        }
    }

    /// Hands work to the instances, waiting for one to be free; on shutdown (or with no
    /// instances left) the message goes back to the queue instead.
    async fn send(&mut self, work: Work) {
        let permit = tokio::select! {
            biased;
            () = stopped(&mut self.stop) => None,
            permit = self.work.reserve() => permit.ok(),
        };
        match permit {
            Some(permit) => permit.send(work),
            None => log_settle(work.delivery.nack(true).await),
        }
    }
}

/// A delivery's exclusivity key, if it has one.
fn key_of(key: &ExclusivityKey, delivery: &Delivery) -> Option<String> {
    match key {
        ExclusivityKey::Header(name) => header_str(&delivery.properties, name)
            .map(str::to_owned)
            .or_else(|| {
                let value = delivery.properties.headers.as_ref()?.get(name)?;
                value.as_i64().map(|n| n.to_string())
            }),
        ExclusivityKey::RoutingKeyPart(index) => delivery
            .routing_key
            .to_str()
            .ok()?
            .split('.')
            .nth(*index)
            .map(str::to_owned),
    }
}

/// One instance: handles messages until shutdown; when its handler fails or panics, it is
/// shut down and a fresh one takes its place after the pause.
async fn instance(shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    loop {
        let mut handler = (shared.factory)();
        let failure = serve(&shared, &mut *handler, &mut stop).await;
        if catch_panic(handler.shutdown()).await.is_err() {
            tracing::warn!(consumer = %shared.name, "handler panicked in shutdown");
        }
        let Some(error) = failure else { return };
        tracing::warn!(consumer = %shared.name, %error, pause = ?shared.restart_pause, "handler failed; replacing the instance");
        tokio::select! {
            () = tokio::time::sleep(shared.restart_pause) => {}
            () = stopped(&mut stop) => return,
        }
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
        let handle = MessageHandle::new(work.delivery, shared.channel.clone());
        let outcome = match catch_panic(handler.consume(handle.message(), &handle)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.0),
            Err(panic) => Some(panic),
        };
        handle.settle_default(outcome.is_none()).await;
        // Only now, with the message settled, may the next one with its key start.
        let _ = shared.done.send(work.key);
        if outcome.is_some() {
            return outcome;
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

fn log_settle(result: amqp_client::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not requeue a message; the broker requeues it when the channel closes");
    }
}
