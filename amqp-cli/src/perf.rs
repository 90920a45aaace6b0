//! `amqp perf`: a load generator in the spirit of RabbitMQ's PerfTest.
//!
//! Producers and consumers each get their own connection. Every body starts with the time it
//! was published (nanoseconds since the run's start, big-endian), so a consumer in the same
//! process measures the end-to-end latency. With no flags: 10 seconds, one producer and one
//! consumer, 1 KiB messages, confirms with a window of 128, on a fresh durable classic queue
//! (with `x-expires`, so that even a killed run leaves nothing behind for long) that is
//! deleted at the end.
//!
//! ```text
//!  producer ──publish──► [queue] ──deliver──► consumer
//!     │   ◄──confirm──┘                          │
//!     └── Stats: counters + HDR histograms ◄─────┘   ◄── progress line every second
//! ```

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_client::{
    BasicProperties, Channel, Confirm, Confirmation, ConsumeOptions, Consumer, FieldTable,
    FieldValue, PublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use bytes::{BufMut, BytesMut};
use clap::Args;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::broker::{self, Session};
use crate::consume::sleep_until;
use crate::declare::QueueType;
use crate::duration::parse_positive_seconds;
use crate::error::{CliError, Result, say};
use crate::headers::{self, Header};
use crate::perf_report::{Progress, Report, Setup, Stats};

/// Octets of the timestamp at the start of every body.
const STAMP_LEN: usize = 8;
/// How long a fresh queue outlives a run that was killed before deleting it (`x-expires`).
const FRESH_QUEUE_EXPIRES_MS: i64 = 60_000;
/// With `--count`, how long consumers may go without a message once the producers are done
/// before the run stops anyway.
const DRAIN_IDLE: Duration = Duration::from_secs(5);
/// The run's length when neither `--duration` nor `--count` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How often the end conditions are checked.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `amqp perf`
#[derive(Args, Clone, Debug)]
pub struct PerfArgs {
    /// Producers, each on its own connection
    #[arg(short = 'x', long, default_value_t = 1, value_name = "N")]
    pub producers: u16,
    /// Consumers, each on its own connection
    #[arg(short = 'y', long, default_value_t = 1, value_name = "N")]
    pub consumers: u16,
    /// Message body size in octets (at least 8: the body carries its publish time)
    #[arg(short = 's', long, default_value_t = 1024, value_name = "OCTETS",
          value_parser = clap::value_parser!(u32).range(8..))]
    pub size: u32,
    /// Publisher confirms: at most N unconfirmed per producer; 0 for no confirms
    #[arg(short = 'c', long = "confirm", default_value_t = 128, value_name = "N")]
    pub confirm: usize,
    /// Unacknowledged deliveries per consumer (basic.qos)
    #[arg(short = 'q', long, default_value_t = 500, value_name = "N")]
    pub prefetch: u16,
    /// Acknowledge every N deliveries at once (basic.ack multiple)
    #[arg(short = 'A', long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub multi_ack: u32,
    /// Consume without acknowledgements
    #[arg(short = 'a', long)]
    pub autoack: bool,
    /// Publishes per second per producer; 0 for as fast as the broker takes them
    #[arg(short = 'r', long, default_value_t = 0.0, value_name = "MSG/S", value_parser = parse_rate,
          allow_negative_numbers = true)]
    pub rate: f64,
    /// Seconds to run (10 unless --count is given)
    #[arg(short = 'z', long, value_name = "SECONDS", value_parser = parse_positive_seconds,
          allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Messages per producer; the run ends when they are all consumed
    #[arg(short = 'C', long, value_name = "N")]
    pub count: Option<u64>,
    /// Use this queue (declared durable if missing, kept after the run) instead of a fresh one
    #[arg(short = 'u', long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// The queue's type (x-queue-type); a fresh queue is classic unless given
    #[arg(long, value_enum, value_name = "TYPE")]
    pub queue_type: Option<QueueType>,
    /// A queue argument such as x-max-length:int=100000, typed as `publish --header` is
    #[arg(long = "queue-arg", value_name = "KEY[:TYPE]=VALUE", value_parser = parse_queue_arg)]
    pub queue_args: Vec<Header>,
    /// Publish to this existing exchange (the queue is bound to it with the routing key)
    #[arg(short = 'e', long, value_name = "EXCHANGE")]
    pub exchange: Option<String>,
    /// Routing key (default: the queue's name)
    #[arg(short = 'k', long, value_name = "KEY")]
    pub routing_key: Option<String>,
    /// Persistent messages (delivery mode 2)
    #[arg(long)]
    pub persistent: bool,
    /// Print the final report as JSON on standard output
    #[arg(long)]
    pub json: bool,
    /// No progress line
    #[arg(long)]
    pub quiet: bool,
}

/// A publish rate: 0 (no limit) or a positive, finite number of messages per second.
fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: expected 0 (no limit) or a positive number of messages per second"
        )),
    }
}

fn parse_queue_arg(s: &str) -> std::result::Result<Header, headers::HeaderError> {
    headers::parse_header(s)
}

/// What every task of a run shares.
#[derive(Debug)]
struct Run {
    url: String,
    queue: String,
    exchange: String,
    routing_key: String,
    args: PerfArgs,
    stats: Stats,
    /// The clock the body timestamps count from.
    epoch: Instant,
    stop: watch::Receiver<bool>,
}

impl Run {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Runs `amqp perf` and prints its report.
///
/// # Errors
/// Invalid option combinations, connection and broker errors (the first one that stopped a
/// producer or consumer).
pub async fn run(url: &str, args: PerfArgs) -> Result<()> {
    validate(&args)?;
    let admin = Session::open(url).await?;
    let admin_channel = admin.channel().await?;
    let (queue, fresh) = match &args.queue {
        Some(q) => (q.clone(), false),
        None => (fresh_queue_name(), true),
    };
    declare_queue(&admin, &admin_channel, &queue, &args, fresh).await?;
    let exchange = args.exchange.clone().unwrap_or_default();
    let routing_key = args.routing_key.clone().unwrap_or_else(|| queue.clone());
    if !exchange.is_empty() {
        admin_channel
            .queue_bind(&queue, &exchange, &routing_key, FieldTable::new())
            .await
            .map_err(admin.failed(format!("bind queue {queue:?} to exchange {exchange:?}")))?;
    }
    let setup = setup(&admin, &args, &queue, fresh);
    let (stop_tx, stop) = watch::channel(false);
    let run = Arc::new(Run {
        url: url.to_owned(),
        queue: queue.clone(),
        exchange,
        routing_key,
        args,
        stats: Stats::default(),
        epoch: Instant::now(),
        stop,
    });
    let outcome = drive(&run, &stop_tx).await;
    if fresh {
        // Cleanup failing must not hide the run's outcome; x-expires removes the queue anyway.
        let _ = admin_channel
            .queue_delete(&queue, QueueDeleteOptions::default())
            .await;
    }
    admin.close().await;
    let elapsed = outcome?;
    let report = Report::new(setup, &run.stats, elapsed);
    if run.args.json {
        say(serde_json::to_string(&report).unwrap_or_default())
    } else {
        say(report.text().trim_end())
    }
}

fn validate(args: &PerfArgs) -> Result<()> {
    if args.producers == 0 && args.consumers == 0 {
        return Err(CliError::Usage("perf needs a producer or a consumer"));
    }
    if !args.autoack && args.prefetch > 0 && args.multi_ack > u32::from(args.prefetch) {
        return Err(CliError::Usage(
            "--multi-ack larger than --prefetch would wait forever for deliveries the broker holds back",
        ));
    }
    Ok(())
}

fn fresh_queue_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("amqp-perf-{}-{nanos:x}", std::process::id())
}

async fn declare_queue(
    admin: &Session,
    channel: &Channel,
    queue: &str,
    args: &PerfArgs,
    fresh: bool,
) -> Result<()> {
    let mut arguments = headers::table(&args.queue_args).unwrap_or_default();
    // An existing queue is declared with only the type asked for: RabbitMQ 3 finds an
    // explicit x-queue-type inequivalent to an absent one (406).
    let kind = args.queue_type.or(fresh.then_some(QueueType::Classic));
    if let Some(kind) = kind {
        arguments.insert("x-queue-type", FieldValue::from(kind.as_str()));
    }
    // Streams refuse x-expires; every other type takes it.
    if fresh && kind != Some(QueueType::Stream) && arguments.get("x-expires").is_none() {
        arguments.insert("x-expires", FieldValue::I64(FRESH_QUEUE_EXPIRES_MS));
    }
    // Durable and not exclusive: consumers on other connections must reach it, and
    // RabbitMQ 4 refuses transient queues that are not exclusive.
    let options = QueueDeclareOptions {
        durable: true,
        arguments,
        ..Default::default()
    };
    channel
        .queue_declare(queue, options)
        .await
        .map_err(admin.failed(format!("declare queue {queue:?}")))?;
    Ok(())
}

fn setup(admin: &Session, args: &PerfArgs, queue: &str, fresh: bool) -> Setup {
    let properties = admin.conn.server_properties();
    let version = properties.get("version");
    Setup {
        broker: admin.host.clone(),
        server_version: version.and_then(FieldValue::as_str).map(str::to_owned),
        queue: queue.to_owned(),
        queue_type: args.queue_type.map_or(
            if fresh { "classic" } else { "as declared" },
            QueueType::as_str,
        ),
        fresh_queue: fresh,
        producers: args.producers,
        consumers: args.consumers,
        message_size: args.size as usize,
        confirm_window: args.confirm,
        prefetch: args.prefetch,
        multi_ack: if args.autoack { 0 } else { args.multi_ack },
        rate_limit: (args.rate > 0.0).then_some(args.rate),
        persistent: args.persistent,
    }
}

/// Subscribes the consumers, then starts the producers, prints progress until the run ends,
/// and returns how long the producers ran.
async fn drive(run: &Arc<Run>, stop_tx: &watch::Sender<bool>) -> Result<Duration> {
    // Every consumer is subscribed before the first publish.
    let subscribed =
        futures_util::future::try_join_all((0..run.args.consumers).map(|_| subscribe(run))).await?;
    let mut consumers = JoinSet::new();
    for (session, consumer) in subscribed {
        consumers.spawn(consume(run.clone(), session, consumer));
    }
    let started = Instant::now();
    let mut producers = JoinSet::new();
    for _ in 0..run.args.producers {
        producers.spawn(produce(run.clone()));
    }
    let ended = watch_progress(run, started, &mut producers).await;
    let _ = stop_tx.send(true);
    let elapsed = started.elapsed();
    let mut first_error = ended.err();
    for set in [&mut producers, &mut consumers] {
        while let Some(done) = set.join_next().await {
            if let Ok(Err(e)) = done {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(elapsed), Err)
}

/// Prints a progress line every second until the duration is over, the count is consumed,
/// the user interrupts, or a producer fails.
async fn watch_progress(
    run: &Run,
    started: Instant,
    producers: &mut JoinSet<Result<()>>,
) -> Result<()> {
    let args = &run.args;
    let deadline = match (args.duration, args.count) {
        (Some(d), _) => Some(started + d),
        (None, Some(_)) => None,
        (None, None) => Some(started + DEFAULT_DURATION),
    };
    let tty = std::io::stderr().is_terminal();
    let mut progress = Progress::default();
    let (mut last_print, mut next_print) = (started, started + PROGRESS_EVERY);
    let mut idle = (0, started);
    let mut producers_done = args.producers == 0;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = check.tick() => {}
            () = sleep_until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(done) = producers.join_next(), if !producers_done => {
                if let Ok(Err(e)) = done {
                    return Err(e);
                }
                producers_done = producers.is_empty();
            }
        }
        let now = Instant::now();
        if !args.quiet && now >= next_print {
            let line = progress.line(&run.stats, now - started, now - last_print);
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            last_print = now;
            next_print += PROGRESS_EVERY;
        }
        if producers_done && count_done(run, &mut idle, now) {
            break;
        }
    }
    if tty && !args.quiet {
        eprintln!();
    }
    Ok(())
}

/// With `--count`, once the producers are done: true when every message was consumed, or
/// the consumers have gone quiet for [`DRAIN_IDLE`] (messages lost or taken by others).
/// `idle` holds the consumed count and when it last changed.
fn count_done(run: &Run, idle: &mut (u64, Instant), now: Instant) -> bool {
    let Some(per_producer) = run.args.count else {
        return false;
    };
    if run.args.consumers == 0 {
        return true;
    }
    let consumed = run.stats.consumed.load(Ordering::Relaxed);
    if consumed >= per_producer.saturating_mul(u64::from(run.args.producers)) {
        return true;
    }
    if consumed != idle.0 {
        *idle = (consumed, now);
    }
    now - idle.1 >= DRAIN_IDLE
}

/// A session with the confirm window of `--confirm`.
async fn connect(run: &Run) -> Result<Session> {
    let mut config = broker::config(&run.url)?;
    config.confirm_window = run.args.confirm.max(1);
    Session::open_with(config).await
}

/// A body of `size` octets starting with the time since the run's epoch in nanoseconds.
fn stamped_body(size: usize, epoch: Instant) -> bytes::Bytes {
    let mut body = BytesMut::with_capacity(size);
    let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    body.put_u64(nanos);
    body.resize(size.max(STAMP_LEN), 0);
    body.freeze()
}

/// The latency of a body made by [`stamped_body`]; `None` for a body from elsewhere.
fn latency(body: &[u8], epoch: Instant) -> Option<Duration> {
    let stamp: [u8; STAMP_LEN] = body.get(..STAMP_LEN)?.try_into().ok()?;
    let sent = Duration::from_nanos(u64::from_be_bytes(stamp));
    epoch.elapsed().checked_sub(sent)
}

async fn produce(run: Arc<Run>) -> Result<()> {
    let session = connect(&run).await?;
    let channel = session.channel().await?;
    let confirms = run.args.confirm > 0;
    if confirms {
        channel
            .confirm_select()
            .await
            .map_err(session.failed("confirm.select"))?;
    }
    let (tx, rx) = mpsc::channel(run.args.confirm.max(1));
    let settle = tokio::spawn(settle_confirms(run.clone(), rx, session.host.clone()));
    let properties = BasicProperties {
        delivery_mode: run.args.persistent.then_some(BasicProperties::PERSISTENT),
        ..Default::default()
    };
    let mut stop = run.stop.clone();
    let started = Instant::now();
    let mut sent = 0u64;
    let target = format!("publish to queue {:?}", run.queue);
    while !run.stopped() && run.args.count.is_none_or(|c| sent < c) {
        if run.args.rate > 0.0 {
            // So slow a rate that the next publish is beyond any clock: wait for the end.
            let due = Duration::try_from_secs_f64(sent as f64 / run.args.rate)
                .ok()
                .and_then(|after| started.checked_add(after));
            tokio::select! {
                () = sleep_until(due) => {}
                _ = stop.changed() => break,
            }
        }
        let body = stamped_body(run.args.size as usize, run.epoch);
        let publish = channel.publish(
            &run.exchange,
            &run.routing_key,
            PublishOptions::default(),
            properties.clone(),
            body,
        );
        let confirm = tokio::select! {
            c = publish => c.map_err(session.failed(target.clone()))?,
            _ = stop.changed() => break,
        };
        run.stats.published.fetch_add(1, Ordering::Relaxed);
        sent += 1;
        if confirms && tx.send((Instant::now(), confirm)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let settled = settle.await;
    session.close().await;
    match settled {
        Ok(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Awaits each publish's confirm, in order, counting and timing them.
async fn settle_confirms(
    run: Arc<Run>,
    mut rx: mpsc::Receiver<(Instant, Confirm)>,
    host: String,
) -> Result<()> {
    let stats = &run.stats;
    while let Some((sent, confirm)) = rx.recv().await {
        let counter = match confirm.await {
            Ok(Confirmation::Ack) => &stats.confirmed,
            Ok(Confirmation::Returned(_)) => &stats.returned,
            Ok(Confirmation::Nack) => &stats.nacked,
            Ok(_) => continue,
            // The connection is closing at the end of the run: the unconfirmed rest is moot.
            Err(_) if run.stopped() => return Ok(()),
            Err(e) => {
                return Err(CliError::Broker {
                    action: format!("confirm a publish to queue {:?}", run.queue),
                    host,
                    source: e,
                });
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stats.record_confirm(sent.elapsed());
    }
    Ok(())
}

/// A consumer's connection, qos and subscription.
async fn subscribe(run: &Run) -> Result<(Session, Consumer)> {
    let session = connect(run).await?;
    let channel = session.channel().await?;
    let queue = &run.queue;
    channel
        .qos(run.args.prefetch, false)
        .await
        .map_err(session.failed("basic.qos"))?;
    let options = ConsumeOptions {
        no_ack: run.args.autoack,
        ..Default::default()
    };
    let consumer = channel
        .consume(queue, options)
        .await
        .map_err(session.failed(format!("consume from queue {queue:?}")))?;
    Ok((session, consumer))
}

async fn consume(run: Arc<Run>, session: Session, mut consumer: Consumer) -> Result<()> {
    let queue = &run.queue;
    let mut stop = run.stop.clone();
    let mut unacked = 0u32;
    while !run.stopped() {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = stop.changed() => break,
        };
        let Some(delivery) = next else { break };
        let delivery = match delivery {
            Ok(d) => d,
            Err(_) if run.stopped() => break,
            Err(e) => return Err(session.failed(format!("consume from queue {queue:?}"))(e)),
        };
        if let Some(l) = latency(&delivery.body, run.epoch) {
            run.stats.record_end_to_end(l);
        }
        run.stats.consumed.fetch_add(1, Ordering::Relaxed);
        if run.args.autoack {
            continue;
        }
        unacked += 1;
        if unacked >= run.args.multi_ack {
            let acked = if unacked > 1 {
                delivery.ack_multiple().await
            } else {
                delivery.ack().await
            };
            acked.map_err(session.failed(format!("ack deliveries from queue {queue:?}")))?;
            unacked = 0;
        }
    }
    let _ = consumer.cancel().await;
    session.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_body_gives_back_its_latency() {
        let epoch = Instant::now();
        let body = stamped_body(64, epoch);
        assert_eq!(body.len(), 64);
        let l = latency(&body, epoch).unwrap();
        assert!(l < Duration::from_secs(5));
        assert_eq!(latency(b"short", epoch), None);
    }
}
