//! The queues of a run: one fresh queue, the user's `--queue`, or fresh queues named by
//! `--queue-pattern`; declared (and bound to `--exchange`) before the run, the fresh ones
//! deleted after it.

use std::time::{SystemTime, UNIX_EPOCH};

use amqp_client::{
    Channel, FieldTable, FieldValue, QueueDeclareOptions, QueueDeleteOptions, ReplyCode,
};

use super::args::PerfArgs;
use crate::broker::Session;
use crate::declare::QueueType;
use crate::error::{CliError, Result};
use crate::headers;

/// How long a fresh queue outlives a run that was killed before deleting it (`x-expires`).
const FRESH_QUEUE_EXPIRES_MS: i64 = 60_000;
/// The most queues a pattern may name.
const MAX_PATTERN_QUEUES: u32 = 10_000;

/// The queues of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Queues {
    /// Their names; producer and consumer `i` use `names[i % len]`.
    pub(super) names: Vec<String>,
    /// Declared for this run and deleted after it.
    pub(super) fresh: bool,
}

impl Queues {
    /// The queues `args` name.
    ///
    /// # Errors
    /// [`CliError::Usage`] for a pattern without `%d` or an empty or huge range.
    pub(super) fn of(args: &PerfArgs) -> Result<Self> {
        if let Some(queue) = &args.queue {
            return Ok(Self {
                names: vec![queue.clone()],
                fresh: false,
            });
        }
        let Some(pattern) = &args.queue_pattern else {
            return Ok(Self {
                names: vec![fresh_queue_name()],
                fresh: true,
            });
        };
        if !pattern.contains("%d") {
            return Err(CliError::Usage("--queue-pattern needs a %d for the number"));
        }
        let (from, to) = (args.queue_pattern_from, args.queue_pattern_to.unwrap_or(0));
        if to < from || to - from >= MAX_PATTERN_QUEUES {
            return Err(CliError::Usage(
                "--queue-pattern-to must be at least --queue-pattern-from, and at most 10000 queues",
            ));
        }
        let names = (from..=to).map(|n| pattern.replace("%d", &n.to_string()));
        Ok(Self {
            names: names.collect(),
            fresh: true,
        })
    }

    /// The queue of producer or consumer number `i`.
    pub(super) fn for_index(&self, i: usize) -> &str {
        &self.names[i % self.names.len()]
    }

    /// The routing key publishes to queue `queue` use.
    pub(super) fn routing_key(&self, args: &PerfArgs, queue: &str) -> String {
        args.routing_key.clone().unwrap_or_else(|| queue.to_owned())
    }

    /// How the report names them: the queue, or the first and last of a pattern's.
    pub(super) fn label(&self) -> String {
        match self.names.as_slice() {
            [one] => one.clone(),
            [first, .., last] => format!("{first} .. {last} ({} queues)", self.names.len()),
            [] => String::new(),
        }
    }

    /// Declares each queue and binds it to `--exchange`.
    ///
    /// # Errors
    /// Broker errors naming the queue or exchange.
    pub(super) async fn declare(
        &self,
        admin: &Session,
        channel: &Channel,
        args: &PerfArgs,
    ) -> Result<()> {
        let exchange = args.exchange.as_deref().unwrap_or_default();
        for queue in &self.names {
            declare_queue(admin, channel, queue, args, self.fresh).await?;
            if exchange.is_empty() {
                continue;
            }
            let key = self.routing_key(args, queue);
            channel
                .queue_bind(queue, exchange, &key, FieldTable::new())
                .await
                .map_err(admin.failed(format!("bind queue {queue:?} to exchange {exchange:?}")))?;
        }
        Ok(())
    }

    /// Deletes the fresh queues. A failure changes nothing for the run's outcome, and
    /// `x-expires` removes them anyway.
    pub(super) async fn delete_fresh(&self, channel: &Channel) {
        if !self.fresh {
            return;
        }
        for queue in &self.names {
            let _ = channel
                .queue_delete(queue, QueueDeleteOptions::default())
                .await;
        }
    }
}

/// Whether `queue` exists (a passive declare, on a channel of its own: a 404 closes it).
async fn exists(admin: &Session, queue: &str) -> Result<bool> {
    let channel = admin.channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel.queue_declare(queue, passive).await {
        Ok(_) => {
            let _ = channel.close().await;
            Ok(true)
        }
        Err(e) if e.reply_code() == Some(ReplyCode(404)) => Ok(false),
        Err(e) => Err(admin.failed(format!("find queue {queue:?}"))(e)),
    }
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
    if !fresh && exists(admin, queue).await? {
        // The user's queue as it is: declaring it with other arguments would be a 406.
        return Ok(());
    }
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
