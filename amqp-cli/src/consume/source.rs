//! Where `amqp consume` takes its messages from: a queue named by `--queue`, or a queue bound
//! to `--exchange` that the command declares and removes again on exit.
//!
//! | flags | queue | on exit |
//! |---|---|---|
//! | `--queue Q` | `Q`, which must exist | nothing |
//! | `--exchange X` | server-named, exclusive, bound to `X` | deleted |
//! | `--exchange X --queue Q` | `Q`, durable, shared by every consumer naming it, bound to `X` | deleted by the last consumer to leave when empty (kept with `--keep-queue`) |
//!
//! Consumers sharing `Q` take turns at its messages; each other queue bound to `X` gets every
//! message: what `--producer --exchange X` and `--consumer --exchange X --id Q` did in lib.mq.

use amqp_client::{FieldTable, QueueDeclareOptions, QueueDeleteOptions, ReplyCode};

use crate::broker::Session;
use crate::error::Result;

/// The queue a consume reads, and what to remove on exit.
#[derive(Debug)]
pub(super) struct Source {
    /// The queue's name (the broker's choice for a server-named one).
    pub(super) queue: String,
    owned: Owned,
}

/// What the command created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owned {
    /// A queue named by `--queue` alone: the user's.
    Nothing,
    /// A server-named exclusive queue.
    Exclusive,
    /// A shared queue, deleted by the last consumer when empty unless `keep`.
    Shared { keep: bool },
}

/// What [`Source::prepare`] needs from the command line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec<'a> {
    pub(super) queue: Option<&'a str>,
    pub(super) exchange: Option<&'a str>,
    pub(super) routing_keys: &'a [String],
    pub(super) keep_queue: bool,
}

impl Source {
    /// Declares and binds the queue when `--exchange` is given.
    ///
    /// # Errors
    /// Broker errors naming the queue or exchange (404 for a missing exchange).
    pub(super) async fn prepare(session: &Session, spec: Spec<'_>) -> Result<Self> {
        let Some(exchange) = spec.exchange else {
            let queue = spec.queue.unwrap_or_default().to_owned();
            return Ok(Self {
                queue,
                owned: Owned::Nothing,
            });
        };
        let channel = session.channel().await?;
        session.require_exchange(&channel, exchange).await?;
        let (name, options, owned) = match spec.queue {
            // Durable and not exclusive: other consumers (other connections) share it, and
            // RabbitMQ 4 refuses transient queues that are not exclusive.
            Some(name) => (
                name,
                durable(),
                Owned::Shared {
                    keep: spec.keep_queue,
                },
            ),
            None => ("", exclusive(), Owned::Exclusive),
        };
        let info = channel
            .queue_declare(name, options)
            .await
            .map_err(session.failed(format!("declare queue {name:?}")))?;
        let queue = String::from_utf8_lossy(info.name.as_bytes()).into_owned();
        let source = Self { queue, owned };
        let default_key = [String::new()];
        let keys = if spec.routing_keys.is_empty() {
            &default_key[..]
        } else {
            spec.routing_keys
        };
        for key in keys {
            let bound = channel
                .queue_bind(&source.queue, exchange, key, FieldTable::new())
                .await
                .map_err(session.failed(format!(
                    "bind queue {:?} to exchange {exchange:?} with key {key:?}",
                    source.queue
                )));
            if let Err(e) = bound {
                source.finish(session).await;
                return Err(e);
            }
        }
        let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        eprintln!(
            "amqp: consuming from queue {:?} bound to exchange {exchange:?} with routing key {}",
            source.queue,
            keys.join(", ")
        );
        Ok(source)
    }

    /// Removes what [`Source::prepare`] created (on a channel of its own: the consume's may
    /// have been closed by an error). A queue others still use, or that holds messages, is
    /// kept, and that is said on standard error.
    pub(super) async fn finish(&self, session: &Session) {
        let options = match self.owned {
            Owned::Nothing | Owned::Shared { keep: true } => return,
            Owned::Exclusive => QueueDeleteOptions::default(),
            Owned::Shared { keep: false } => QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
            },
        };
        let Ok(channel) = session.channel().await else {
            // The connection is gone; an exclusive queue went with it.
            return;
        };
        match channel.queue_delete(&self.queue, options).await {
            Err(e) if e.reply_code() == Some(ReplyCode(406)) => eprintln!(
                "amqp: kept queue {:?}: other consumers use it or it holds messages",
                self.queue
            ),
            // Another consumer of the shared queue deleted it first.
            Err(e) if e.reply_code() == Some(ReplyCode(404)) => {}
            Err(e) => eprintln!(
                "amqp: could not delete queue {:?}: {}",
                self.queue,
                crate::error::explain(&e)
            ),
            Ok(_) => {}
        }
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    }
}
