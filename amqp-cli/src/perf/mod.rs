//! `amqp perf`: a load generator in the spirit of RabbitMQ's PerfTest, with its flags.
//!
//! Producers and consumers each get their own connection, with one or more channels. Every
//! message carries the time it was published (nanoseconds since the run's start: at the
//! start of the body, or in a header when the body is a file's or JSON), so a consumer in
//! the same process measures the end-to-end latency. With no flags: 10 seconds, one producer
//! and one consumer, 1 KiB messages, confirms with a window of 128, on a fresh durable
//! classic queue (with `x-expires`, so that even a killed run leaves nothing behind for long)
//! that is deleted at the end.
//!
//! ```text
//!  producer ──publish──► [queue(s)] ──deliver──► consumer
//!     │   ◄──confirm──┘                             │
//!     └── Stats: counters + HDR histograms ◄────────┘   ◄── figures every second
//! ```

mod args;
mod body;
mod consumer;
mod producer;
mod progress;
mod queues;
mod schedule;

use std::sync::Arc;
use std::time::Duration;

use amqp_client::{BasicProperties, FieldValue};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use args::{Flag, PerfArgs, ProgressFormat, Step};
use body::Bodies;
pub use body::STAMP_HEADER;
use queues::Queues;
use schedule::Schedule;

use crate::broker::{self, Session};
use crate::error::{CliError, Result, say};
use crate::perf_report::{Report, Setup, Stats};

/// What every task of a run shares.
#[derive(Debug)]
struct Run {
    url: String,
    queues: Queues,
    exchange: String,
    args: PerfArgs,
    bodies: Bodies,
    rates: Schedule,
    sizes: Schedule,
    /// The properties every message has.
    base: BasicProperties,
    stats: Stats,
    /// The clock the publish stamps count from.
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
/// Invalid option combinations, unreadable `--body` files, connection and broker errors (the
/// first one that stopped a producer or consumer).
pub async fn run(url: &str, args: PerfArgs) -> Result<()> {
    validate(&args)?;
    let queues = Queues::of(&args)?;
    let bodies = Bodies::of(&args)?;
    let admin = Session::open(url).await?;
    let admin_channel = admin.channel().await?;
    queues.declare(&admin, &admin_channel, &args).await?;
    let setup = setup(&admin, &args, &queues);
    let (stop_tx, stop) = watch::channel(false);
    let run = Arc::new(Run {
        url: url.to_owned(),
        exchange: args.exchange.clone().unwrap_or_default(),
        base: BasicProperties {
            delivery_mode: args.persistent().then_some(BasicProperties::PERSISTENT),
            content_type: bodies.content_type(&args),
            ..Default::default()
        },
        rates: Schedule::new(&args.variable_rate, args.rate),
        sizes: Schedule::new(&args.variable_size, f64::from(args.size)),
        queues,
        bodies,
        args,
        stats: Stats::default(),
        epoch: Instant::now(),
        stop,
    });
    let outcome = drive(&run, &stop_tx).await;
    run.queues.delete_fresh(&admin_channel).await;
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

fn setup(admin: &Session, args: &PerfArgs, queues: &Queues) -> Setup {
    let properties = admin.conn.server_properties();
    let version = properties.get("version");
    let first = |steps: &[Step]| steps.first().map(|s| s.value);
    Setup {
        broker: admin.host.clone(),
        server_version: version.and_then(FieldValue::as_str).map(str::to_owned),
        queue: queues.label(),
        queue_type: args.queue_type.map_or(
            if queues.fresh {
                "classic"
            } else {
                "as declared"
            },
            crate::declare::QueueType::as_str,
        ),
        fresh_queue: queues.fresh,
        producers: args.producers,
        consumers: args.consumers,
        message_size: first(&args.variable_size).map_or(args.size as usize, |s| s as usize),
        confirm_window: args.confirm,
        prefetch: args.prefetch,
        multi_ack: if args.autoack { 0 } else { args.multi_ack },
        rate_limit: match first(&args.variable_rate) {
            Some(rate) => (rate > 0.0).then_some(rate),
            None => (args.rate > 0.0).then_some(args.rate),
        },
        persistent: args.persistent(),
    }
}

/// Subscribes the consumers, then starts the producers, watches the run until it ends, and
/// returns how long the producers ran.
async fn drive(run: &Arc<Run>, stop_tx: &watch::Sender<bool>) -> Result<Duration> {
    // Every consumer is subscribed before the first publish.
    let subscriptions = (0..usize::from(run.args.consumers)).map(|i| consumer::subscribe(run, i));
    let subscribed = futures_util::future::try_join_all(subscriptions).await?;
    let mut consumers = JoinSet::new();
    for (index, (session, subscription)) in subscribed.into_iter().enumerate() {
        consumers.spawn(consumer::consume(run.clone(), index, session, subscription));
    }
    let started = Instant::now();
    let mut producers = JoinSet::new();
    for index in 0..usize::from(run.args.producers) {
        producers.spawn(producer::produce(run.clone(), index));
    }
    let ended = progress::watch(run, started, &mut producers).await;
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

/// A session with the confirm window of `--confirm`.
async fn connect(run: &Run) -> Result<Session> {
    let mut config = broker::config(&run.url)?;
    config.confirm_window = run.args.confirm.max(1);
    Session::open_with(config).await
}
