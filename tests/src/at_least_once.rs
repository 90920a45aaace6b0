//! An at-least-once message stream under faults, and its report.
//!
//! Producers publish numbered messages with confirms on one connection; consumers on another
//! connection ack each message after "processing" it (counting its number). A fault task
//! breaks things meanwhile. A publish whose outcome is not an ack (`OutcomeUnknown` after a
//! loss, a nack, any error) is published again, so every number is eventually confirmed; at
//! the end every confirmed number must have been processed at least once.
//!
//! ```text
//!  producer i ──publish(seq)──► collector i ──Ack──► confirmed[seq]
//!      ▲                           │ not Ack
//!      └─────────── retry ◄────────┘
//!  consumer j ──delivery──► processed[seq] += 1 ──► ack
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, Confirmation, Connection, ConnectionConfig, ConnectionEvent, ConsumeOptions,
    Error, PublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Messages to get confirmed, numbered `0..messages`.
    pub messages: u64,
    /// Producer channels (each with its share of the numbers) on the producer connection.
    pub producers: usize,
    /// Consumer channels on the consumer connection.
    pub consumers: usize,
    /// Per-consumer prefetch.
    pub prefetch: u16,
    /// Body size in octets (at least 8: the number, then a pattern).
    pub body_size: usize,
    /// Publish with `delivery_mode` 2 (needed to survive a broker restart).
    pub persistent: bool,
    /// The durable queue to use; declared at the start, deleted at the end.
    pub queue: String,
    /// Extra arguments of its declaration (`x-queue-type: quorum`, ...); `x-expires` is
    /// added unless given.
    pub queue_arguments: amqp_client::FieldTable,
    /// The producers' connection.
    pub producer: ConnectionConfig,
    /// The consumers' connection.
    pub consumer: ConnectionConfig,
    /// How long the consumers may take, after the last confirm, to process the rest.
    pub drain_timeout: Duration,
    /// At most this many publishes per second over all producers (`None`: as fast as the
    /// confirm window allows), to stretch a run over slow faults.
    pub rate: Option<u32>,
}

/// What the fault task can watch.
#[derive(Debug)]
pub struct Progress {
    messages: u64,
    confirmed: AtomicU64,
    processed: AtomicU64,
    publishing_done: AtomicBool,
    started: Instant,
}

impl Progress {
    /// Numbers confirmed so far (each counted once).
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::SeqCst)
    }

    /// Distinct numbers processed so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::SeqCst)
    }

    /// Messages the run publishes.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Every number is confirmed: the fault task should end.
    pub fn publishing_done(&self) -> bool {
        self.publishing_done.load(Ordering::SeqCst)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Messages of the run.
    pub messages: u64,
    /// Distinct numbers confirmed.
    pub confirmed: u64,
    /// Confirmed numbers never processed: must be 0.
    pub lost: u64,
    /// Deliveries processed beyond the first of their number.
    pub duplicated: u64,
    /// Deliveries with a number out of range or a damaged body: must be 0.
    pub corrupt: u64,
    /// Publishes that resolved with [`Error::OutcomeUnknown`] (and were published again).
    pub outcome_unknown: u64,
    /// Publishes that failed otherwise, or were nacked (and were published again).
    pub publish_errors: u64,
    /// Acks refused with [`Error::StaleDelivery`] (the broker redelivers those).
    pub stale_acks: u64,
    /// `Disconnected` events on both connections.
    pub disconnects: u64,
    /// `Recovered` events on both connections.
    pub recoveries: u64,
    /// `Failed` events (recovery gave up): must be 0.
    pub failures: u64,
    /// The longest time without a confirm, from the first to the last.
    pub longest_pause: Duration,
    /// From the first publish to the last message processed.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "messages={} confirmed={} lost={} duplicated={} corrupt={} outcome_unknown={} \
             publish_errors={} stale_acks={} disconnects={} recoveries={} failures={} \
             longest_pause={:.3}s elapsed={:.1}s",
            self.messages,
            self.confirmed,
            self.lost,
            self.duplicated,
            self.corrupt,
            self.outcome_unknown,
            self.publish_errors,
            self.stale_acks,
            self.disconnects,
            self.recoveries,
            self.failures,
            self.longest_pause.as_secs_f64(),
            self.elapsed.as_secs_f64(),
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    outcome_unknown: AtomicU64,
    publish_errors: AtomicU64,
    stale_acks: AtomicU64,
    corrupt: AtomicU64,
    disconnects: AtomicU64,
    recoveries: AtomicU64,
    failures: AtomicU64,
}

/// When the last confirm came and the longest gap between two.
#[derive(Debug)]
struct Pauses {
    last: Option<Instant>,
    longest: Duration,
}

struct State {
    spec: Spec,
    progress: Arc<Progress>,
    counters: Counters,
    confirmed: Vec<AtomicBool>,
    processed: Vec<AtomicU32>,
    pauses: Mutex<Pauses>,
}

impl State {
    fn confirm(&self, seq: u64) -> bool {
        let fresh = !self.confirmed[seq as usize].swap(true, Ordering::SeqCst);
        if fresh {
            self.progress.confirmed.fetch_add(1, Ordering::SeqCst);
            let now = Instant::now();
            let mut p = self.pauses.lock().unwrap();
            if let Some(last) = p.last {
                p.longest = p.longest.max(now - last);
            }
            p.last = Some(now);
        }
        fresh
    }
}

/// The body of message `seq`: its number, then a pattern derived from it.
pub fn body(seq: u64, size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size.max(8));
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend((8..size).map(|i| (seq as usize).wrapping_add(i) as u8));
    b
}

/// The number of a body made by [`body`], if it is intact.
pub fn parse(body: &[u8], size: usize) -> Option<u64> {
    let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    (body.len() == size.max(8) && body[..] == self::body(seq, size)[..]).then_some(seq)
}

/// Runs the stream with `faults` alongside and returns the report. `faults` should return
/// once [`Progress::publishing_done`].
///
/// # Panics
/// When a connection cannot be opened, the queue cannot be declared, a confirm never
/// resolves, or a consumer's stream ends with an error.
pub async fn run<F, Fut>(spec: Spec, faults: F) -> Report
where
    F: FnOnce(Arc<Progress>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let progress = Arc::new(Progress {
        messages: spec.messages,
        confirmed: AtomicU64::new(0),
        processed: AtomicU64::new(0),
        publishing_done: AtomicBool::new(false),
        started: Instant::now(),
    });
    let state = Arc::new(State {
        progress: progress.clone(),
        counters: Counters::default(),
        confirmed: (0..spec.messages).map(|_| AtomicBool::new(false)).collect(),
        processed: (0..spec.messages).map(|_| AtomicU32::new(0)).collect(),
        pauses: Mutex::new(Pauses {
            last: None,
            longest: Duration::ZERO,
        }),
        spec,
    });
    let spec = &state.spec;

    let consumer_conn = Connection::connect_with(spec.consumer.clone())
        .await
        .expect("consumer connection");
    let producer_conn = Connection::connect_with(spec.producer.clone())
        .await
        .expect("producer connection");
    for conn in [&consumer_conn, &producer_conn] {
        tokio::spawn(watch_events(conn.events(), state.clone()));
    }
    let setup = consumer_conn.open_channel().await.expect("channel");
    setup
        .queue_declare(
            &spec.queue,
            QueueDeclareOptions {
                durable: true,
                // Should a run die before its cleanup, the broker deletes the queue itself
                // once it has been unused for five minutes.
                arguments: {
                    let mut arguments = spec.queue_arguments.clone();
                    if arguments.get("x-expires").is_none() {
                        arguments.insert("x-expires", 300_000i32);
                    }
                    arguments
                },
                ..Default::default()
            },
        )
        .await
        .expect("declare the durable queue");
    setup.queue_purge(&spec.queue).await.expect("purge");

    let (stop_tx, stop) = watch::channel(false);
    let mut consumers = Vec::new();
    for _ in 0..spec.consumers {
        let ch = consumer_conn
            .open_channel()
            .await
            .expect("consumer channel");
        ch.qos(spec.prefetch, false).await.expect("qos");
        let consumer = ch
            .consume(&spec.queue, ConsumeOptions::default())
            .await
            .expect("consume");
        consumers.push(tokio::spawn(consume(consumer, state.clone(), stop.clone())));
    }

    let mut producers = Vec::new();
    let per = spec.messages.div_ceil(spec.producers as u64);
    for i in 0..spec.producers as u64 {
        let range = (i * per)..((i + 1) * per).min(spec.messages);
        let ch = producer_conn
            .open_channel()
            .await
            .expect("producer channel");
        ch.confirm_select().await.expect("confirm.select");
        producers.push(tokio::spawn(produce(ch, range, state.clone())));
    }
    // Faults start once every producer is set up: a request cut mid-flight fails (as it
    // should), and the setup's requests are not what this measures.
    let fault_task = tokio::spawn(faults(progress.clone()));
    for p in producers {
        p.await.expect("producer task");
    }
    progress.publishing_done.store(true, Ordering::SeqCst);
    let confirmed_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), fault_task)
        .await
        .expect("the fault task ends once publishing is done")
        .expect("fault task");

    // Every number is confirmed; wait for the consumers to process them all.
    while progress.processed() < spec.messages && confirmed_at.elapsed() < spec.drain_timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = progress.elapsed();
    // A moment for redeliveries in flight, so duplicates are counted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send_replace(true);
    for c in consumers {
        c.await.expect("consumer task");
    }

    let mut report = Report {
        messages: spec.messages,
        confirmed: progress.confirmed(),
        elapsed,
        longest_pause: state.pauses.lock().unwrap().longest,
        ..Report::default()
    };
    for (confirmed, processed) in state.confirmed.iter().zip(&state.processed) {
        let n = processed.load(Ordering::SeqCst);
        if confirmed.load(Ordering::SeqCst) && n == 0 {
            report.lost += 1;
        }
        report.duplicated += u64::from(n.saturating_sub(1));
    }
    let c = &state.counters;
    report.corrupt = c.corrupt.load(Ordering::SeqCst);
    report.outcome_unknown = c.outcome_unknown.load(Ordering::SeqCst);
    report.publish_errors = c.publish_errors.load(Ordering::SeqCst);
    report.stale_acks = c.stale_acks.load(Ordering::SeqCst);
    report.disconnects = c.disconnects.load(Ordering::SeqCst);
    report.recoveries = c.recoveries.load(Ordering::SeqCst);
    report.failures = c.failures.load(Ordering::SeqCst);

    // A cut still pending in the fault injector may hit the cleanup: try again.
    let mut deleted = Err(None);
    for _ in 0..5 {
        let delete = async {
            let ch = consumer_conn.open_channel().await?;
            ch.queue_delete(&spec.queue, QueueDeleteOptions::default())
                .await
        };
        deleted = match tokio::time::timeout(Duration::from_secs(10), delete).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        };
        if deleted.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Err(e) = deleted {
        eprintln!("could not delete {}: {e:?}", spec.queue);
    }
    for conn in [consumer_conn, producer_conn] {
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.close()).await;
    }
    report
}

async fn watch_events(
    mut events: tokio::sync::broadcast::Receiver<ConnectionEvent>,
    state: Arc<State>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let counter = match events.recv().await {
            Ok(ConnectionEvent::Disconnected { .. }) => &state.counters.disconnects,
            Ok(ConnectionEvent::Recovered { .. }) => &state.counters.recoveries,
            Ok(ConnectionEvent::Failed { error }) => {
                eprintln!("recovery failed: {error}");
                &state.counters.failures
            }
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

async fn consume(
    mut consumer: amqp_client::Consumer,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let size = state.spec.body_size;
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => d,
            _ = stop.wait_for(|s| *s) => return,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => panic!("consumer stream failed: {e}"),
            None => panic!("consumer stream ended"),
        };
        match parse(&delivery.body, size).filter(|&s| s < state.spec.messages) {
            Some(seq) => {
                if state.processed[seq as usize].fetch_add(1, Ordering::SeqCst) == 0 {
                    state.progress.processed.fetch_add(1, Ordering::SeqCst);
                }
            }
            None => {
                state.counters.corrupt.fetch_add(1, Ordering::SeqCst);
            }
        }
        match delivery.ack().await {
            Ok(()) => {}
            Err(Error::StaleDelivery(_)) => {
                state.counters.stale_acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => panic!("ack failed: {e}"),
        }
    }
}

/// Publishes `range` until every number in it is confirmed.
async fn produce(ch: amqp_client::Channel, range: std::ops::Range<u64>, state: Arc<State>) {
    let size = state.spec.body_size;
    let properties = BasicProperties {
        delivery_mode: Some(if state.spec.persistent { 2 } else { 1 }),
        ..Default::default()
    };
    let (retry_tx, mut retry) = mpsc::unbounded_channel::<u64>();
    let (remaining_tx, mut remaining) = watch::channel(range.end - range.start);
    let (confirms_tx, confirms) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(
        confirms,
        retry_tx.clone(),
        remaining_tx,
        state.clone(),
    ));
    let pace = state
        .spec
        .rate
        .map(|r| Duration::from_secs_f64(state.spec.producers as f64 / f64::from(r.max(1))));
    let mut due = tokio::time::Instant::now();
    let mut next = range.start;
    loop {
        if let Some(pace) = pace {
            due += pace;
            tokio::time::sleep_until(due).await;
        }
        let seq = if let Ok(seq) = retry.try_recv() {
            seq
        } else if next < range.end {
            next += 1;
            next - 1
        } else {
            tokio::select! {
                seq = retry.recv() => seq.expect("the retry queue stays open"),
                _ = remaining.wait_for(|r| *r == 0) => break,
            }
        };
        match ch
            .publish(
                "",
                &state.spec.queue,
                PublishOptions::default(),
                properties.clone(),
                body(seq, size),
            )
            .await
        {
            Ok(confirm) => confirms_tx.send((seq, confirm)).expect("collector"),
            Err(e) => {
                if let Some(reason) = ch.close_reason() {
                    panic!("producer channel ended: {reason} (publish: {e})");
                }
                state.counters.publish_errors.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                retry_tx.send(seq).expect("retry queue");
            }
        }
    }
    drop(confirms_tx);
    collector.await.expect("collector task");
}

/// Awaits the confirms in publish order: acked numbers are done, the rest go back.
async fn collect(
    mut confirms: mpsc::UnboundedReceiver<(u64, amqp_client::Confirm)>,
    retry: mpsc::UnboundedSender<u64>,
    remaining: watch::Sender<u64>,
    state: Arc<State>,
) {
    while let Some((seq, confirm)) = confirms.recv().await {
        let outcome = tokio::time::timeout(Duration::from_secs(90), confirm)
            .await
            .unwrap_or_else(|_| panic!("the confirm of {seq} did not resolve within 90 s"));
        match outcome {
            Ok(Confirmation::Ack) => {
                if state.confirm(seq) {
                    remaining.send_modify(|r| *r -= 1);
                }
            }
            Ok(other) => {
                // The first few: a quorum queue nacks thousands while it elects a leader.
                if state.counters.publish_errors.fetch_add(1, Ordering::SeqCst) < 10 {
                    eprintln!("publish of {seq}: {other:?}");
                }
                let _ = retry.send(seq);
            }
            Err(Error::OutcomeUnknown) => {
                state
                    .counters
                    .outcome_unknown
                    .fetch_add(1, Ordering::SeqCst);
                let _ = retry.send(seq);
            }
            Err(_) => {
                state.counters.publish_errors.fetch_add(1, Ordering::SeqCst);
                let _ = retry.send(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_damage_is_seen() {
        for size in [16, 100] {
            let b = body(123_456, size);
            assert_eq!(b.len(), size);
            assert_eq!(parse(&b, size), Some(123_456));
            let mut damaged = b.clone();
            *damaged.last_mut().unwrap() ^= 1;
            assert_eq!(parse(&damaged, size), None);
            assert_eq!(parse(&b[..size - 1], size), None);
        }
    }
}
