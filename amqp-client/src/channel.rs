//! [`Channel`]: the handle most of the API hangs on.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use amqp_wire::connection::UsageError;
use amqp_wire::methods::*;
use amqp_wire::{ChannelId, DeliveryTag, FieldTable, Method, ReplyCode, ShortStr};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::command::{Command, ConsumerSink, Reply, Settle, ask};
use crate::connection::ConnShared;
use crate::error::{Error, Result};
use crate::options::{
    ExchangeDeclareOptions, ExchangeKind, QueueDeclareOptions, QueueDeleteOptions,
};

/// What the driver and every handle of one channel share.
#[derive(Debug)]
pub(crate) struct ChannelShared {
    pub(crate) id: ChannelId,
    /// Counts the channels opened on this connection, so a handle never acts on a later
    /// channel that reuses its number.
    pub(crate) generation: u64,
    /// Set once, when the channel ends: every later call fails with it.
    pub(crate) closed: OnceLock<Error>,
    pub(crate) confirm_mode: AtomicBool,
    /// Bounds unconfirmed publishes in confirm mode.
    pub(crate) window: Arc<Semaphore>,
    /// The last per-consumer prefetch count set with `qos`.
    pub(crate) prefetch: AtomicU32,
    /// The last channel-wide (`global`) prefetch count set with `qos`.
    pub(crate) global_prefetch: AtomicU32,
    /// What the driver adds to the broker's delivery tags, so that the tags the application
    /// sees keep growing across recoveries (the broker starts again at 1 on a new connection):
    /// a tag at or below it comes from a lost connection and is void.
    pub(crate) tag_base: AtomicU64,
    pub(crate) conn: Arc<ConnShared>,
}

impl ChannelShared {
    pub(crate) fn new(id: ChannelId, generation: u64, conn: Arc<ConnShared>) -> Self {
        Self {
            id,
            generation,
            closed: OnceLock::new(),
            confirm_mode: AtomicBool::new(false),
            window: Arc::new(Semaphore::new(conn.limits.confirm_window.max(1))),
            prefetch: AtomicU32::new(0),
            global_prefetch: AtomicU32::new(0),
            tag_base: AtomicU64::new(0),
            conn,
        }
    }

    /// A command can reach the driver just after the broker closed its channel; the driver
    /// then knows only that the channel is not open. The channel's own error says why.
    pub(crate) fn explain(&self, error: Error) -> Error {
        match error {
            Error::Usage(UsageError::ChannelNotOpen(id)) if id == self.id => {
                self.closed.get().cloned().unwrap_or(error)
            }
            other => other,
        }
    }

    /// The error of a channel whose driver is gone or which has closed.
    pub(crate) fn gone(&self) -> Error {
        self.closed
            .get()
            .cloned()
            .unwrap_or_else(|| self.conn.gone())
    }
}

/// Held by every handle of one channel ([`Channel`] clones, its consumers, confirms and
/// returns listener, and deliveries taken from it): when the last one is dropped, the
/// channel is closed, so an application that forgets a channel does not leak its number.
#[derive(Debug)]
pub(crate) struct HandleGuard {
    shared: Arc<ChannelShared>,
    tx: mpsc::Sender<Command>,
}

impl Drop for HandleGuard {
    /// Queues `channel.close` without waiting (a `Drop` never blocks): when the queue is
    /// full, the channel stays open until the connection closes, and a warning says so.
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.closed.get().is_some() || shared.conn.closed.get().is_some() {
            return;
        }
        let (reply, _) = oneshot::channel();
        let command = Command::CloseChannel {
            channel: shared.id,
            generation: shared.generation,
            code: ReplyCode::SUCCESS,
            text: "last handle dropped".into(),
            reply,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(command) {
            tracing::warn!(
                channel = shared.id.0,
                "could not close a dropped channel: the command queue is full"
            );
        }
    }
}

/// What `queue.declare` answers.
///
/// ```no_run
/// # async fn example(channel: amqp_client::Channel) -> amqp_client::Result<()> {
/// let queue = channel.queue_declare("", Default::default()).await?;
/// channel.queue_bind(queue.name(), "amq.fanout", "", Default::default()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue's name (the broker's choice when declared with an empty name).
    pub name: ShortStr,
    /// Messages ready in the queue.
    pub message_count: u32,
    /// Consumers on the queue.
    pub consumer_count: u32,
}

impl QueueInfo {
    /// The queue's name as text. [`Channel::queue_declare`] refuses a reply whose name is
    /// not UTF-8, so this is empty only when the `name` field was replaced by such octets.
    pub fn name(&self) -> &str {
        self.name.to_str().unwrap_or_default()
    }
}

/// An AMQP channel. Cheap to clone; every clone is the same channel.
///
/// Every call that waits on the broker gives up after the connection's operation timeout,
/// or the one set with [`Channel::with_timeout`].
///
/// ```no_run
/// # async fn example() -> amqp_client::Result<()> {
/// use amqp_client::{BasicProperties, Confirmation, Connection, PublishOptions, QueueDeclareOptions};
/// let conn = Connection::connect("amqp://guest:guest@localhost:5672/%2f").await?;
/// let channel = conn.open_channel().await?;
/// channel.confirm_select().await?;
/// let queue = channel.queue_declare("jobs", QueueDeclareOptions { durable: true, ..Default::default() }).await?;
/// let confirm = channel
///     .publish("", "jobs", PublishOptions::default(), BasicProperties::default(), "hello")
///     .await?;
/// assert_eq!(confirm.await?, Confirmation::Ack);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Channel {
    pub(crate) shared: Arc<ChannelShared>,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) timeout: Duration,
    /// Closes the channel when the last handle goes.
    pub(crate) guard: Arc<HandleGuard>,
}

impl Channel {
    pub(crate) fn new(shared: Arc<ChannelShared>, tx: mpsc::Sender<Command>) -> Self {
        let timeout = shared.conn.limits.operation_timeout;
        let guard = Arc::new(HandleGuard {
            shared: shared.clone(),
            tx: tx.clone(),
        });
        Self {
            shared,
            tx,
            timeout,
            guard,
        }
    }

    /// The channel's number.
    pub fn id(&self) -> ChannelId {
        self.shared.id
    }

    /// The same channel with another timeout for calls that wait on the broker.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// True once the channel has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.get().is_some() || self.shared.conn.closed.get().is_some()
    }

    /// Why the channel ended, once it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.shared
            .closed
            .get()
            .or(self.shared.conn.closed.get())
            .cloned()
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        match self.close_reason() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) async fn request(
        &self,
        method: Method,
        consumer: Option<ConsumerSink>,
    ) -> Result<Reply> {
        self.check_open()?;
        let (channel, generation) = (self.shared.id, self.shared.generation);
        let reply = ask(
            &self.tx,
            method.name(),
            self.timeout,
            || self.shared.gone(),
            |reply| Command::Call {
                channel,
                generation,
                method,
                reply,
                consumer,
            },
        )
        .await;
        reply.map_err(|e| self.shared.explain(e))
    }

    /// A request whose reply carries nothing the caller needs.
    pub(crate) async fn call(&self, method: impl Into<Method>) -> Result<Method> {
        match self.request(method.into(), None).await? {
            Reply::Method(m) => Ok(m),
            other => Err(unexpected_reply(&other)),
        }
    }

    /// Declares an exchange (`exchange.declare`).
    ///
    /// # Errors
    /// 406 when it exists with other properties, 403 for a name starting with `amq.`.
    pub async fn exchange_declare(
        &self,
        name: &str,
        kind: ExchangeKind,
        options: ExchangeDeclareOptions,
    ) -> Result<()> {
        self.call(ExchangeDeclare {
            exchange: short("exchange", name)?,
            kind: short("exchange type", kind.as_str())?,
            passive: options.passive,
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            no_wait: false,
            arguments: options.arguments,
        })
        .await
        .map(drop)
    }

    /// Deletes an exchange (`exchange.delete`); RabbitMQ treats a missing one as deleted.
    ///
    /// # Errors
    /// 406 with `if_unused` when it has bindings.
    pub async fn exchange_delete(&self, name: &str, if_unused: bool) -> Result<()> {
        self.call(ExchangeDelete {
            exchange: short("exchange", name)?,
            if_unused,
            no_wait: false,
        })
        .await
        .map(drop)
    }

    /// Binds exchange `destination` to receive from `source` (`exchange.bind`).
    ///
    /// # Errors
    /// 404 when either is missing.
    pub async fn exchange_bind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        self.call(ExchangeBind {
            destination: short("exchange", destination)?,
            source: short("exchange", source)?,
            routing_key: short("routing key", routing_key)?,
            no_wait: false,
            arguments,
        })
        .await
        .map(drop)
    }

    /// Removes an exchange-to-exchange binding (`exchange.unbind`).
    ///
    /// # Errors
    /// When the channel or connection is gone.
    pub async fn exchange_unbind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        self.call(ExchangeUnbind {
            destination: short("exchange", destination)?,
            source: short("exchange", source)?,
            routing_key: short("routing key", routing_key)?,
            no_wait: false,
            arguments,
        })
        .await
        .map(drop)
    }

    /// Declares a queue (`queue.declare`); an empty name lets the broker choose one.
    ///
    /// # Errors
    /// 406 when it exists with other arguments, 405 when another connection holds it
    /// exclusively, 404 for a passive declare of a missing queue.
    pub async fn queue_declare(
        &self,
        name: &str,
        options: QueueDeclareOptions,
    ) -> Result<QueueInfo> {
        let method = QueueDeclare {
            queue: short("queue", name)?,
            passive: options.passive,
            durable: options.durable,
            exclusive: options.exclusive,
            auto_delete: options.auto_delete,
            no_wait: false,
            arguments: options.arguments,
        };
        match self.call(method).await? {
            Method::QueueDeclareOk(ok) if ok.queue.to_str().is_err() => Err(
                Error::UnexpectedReply("queue.declare-ok with a non-UTF-8 name"),
            ),
            Method::QueueDeclareOk(ok) => Ok(QueueInfo {
                name: ok.queue,
                message_count: ok.message_count,
                consumer_count: ok.consumer_count,
            }),
            other => Err(unexpected_method(&other)),
        }
    }

    /// Binds a queue to an exchange (`queue.bind`).
    ///
    /// # Errors
    /// 404 when either is missing.
    pub async fn queue_bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        self.call(QueueBind {
            queue: short("queue", queue)?,
            exchange: short("exchange", exchange)?,
            routing_key: short("routing key", routing_key)?,
            no_wait: false,
            arguments,
        })
        .await
        .map(drop)
    }

    /// Removes a queue binding (`queue.unbind`).
    ///
    /// # Errors
    /// When the channel or connection is gone.
    pub async fn queue_unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        self.call(QueueUnbind {
            queue: short("queue", queue)?,
            exchange: short("exchange", exchange)?,
            routing_key: short("routing key", routing_key)?,
            arguments,
        })
        .await
        .map(drop)
    }

    /// Removes every ready message of a queue (`queue.purge`); returns how many.
    ///
    /// # Errors
    /// 404 when it is missing.
    pub async fn queue_purge(&self, queue: &str) -> Result<u32> {
        match self
            .call(QueuePurge {
                queue: short("queue", queue)?,
                no_wait: false,
            })
            .await?
        {
            Method::QueuePurgeOk(ok) => Ok(ok.message_count),
            other => Err(unexpected_method(&other)),
        }
    }

    /// Deletes a queue (`queue.delete`); returns how many messages it held.
    ///
    /// # Errors
    /// 406 when `if_unused` / `if_empty` do not hold.
    pub async fn queue_delete(&self, queue: &str, options: QueueDeleteOptions) -> Result<u32> {
        let method = QueueDelete {
            queue: short("queue", queue)?,
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            no_wait: false,
        };
        match self.call(method).await? {
            Method::QueueDeleteOk(ok) => Ok(ok.message_count),
            other => Err(unexpected_method(&other)),
        }
    }

    /// Makes the channel transactional (`tx.select`).
    ///
    /// # Errors
    /// [`Error::Usage`] on a channel in confirm mode.
    pub async fn tx_select(&self) -> Result<()> {
        self.call(TxSelect).await.map(drop)
    }

    /// Commits the current transaction (`tx.commit`).
    ///
    /// # Errors
    /// 406 when the channel is not transactional.
    pub async fn tx_commit(&self) -> Result<()> {
        self.call(TxCommit).await.map(drop)
    }

    /// Rolls the current transaction back (`tx.rollback`).
    ///
    /// # Errors
    /// 406 when the channel is not transactional.
    pub async fn tx_rollback(&self) -> Result<()> {
        self.call(TxRollback).await.map(drop)
    }

    /// Resumes deliveries on the channel (`channel.flow` active). Pausing is refused:
    /// RabbitMQ answers it by closing the connection (540); use `qos` instead.
    ///
    /// # Errors
    /// [`Error::Usage`] for `active: false`.
    pub async fn flow(&self, active: bool) -> Result<()> {
        self.call(ChannelFlow { active }).await.map(drop)
    }

    /// Acknowledges a delivery of this channel by tag (with `multiple`, every one up to it).
    /// Waits until the connection has sent it (not for the broker, which does not answer).
    ///
    /// # Errors
    /// [`Error::Usage`] when no such delivery awaits a settle on this channel (already
    /// settled, or consumed without acks): nothing is sent, and the channel stays open (the
    /// broker would close it with 406). [`Error::StaleDelivery`] for a tag from before a
    /// reconnection; the channel's error if it closed.
    pub async fn ack(&self, tag: DeliveryTag, multiple: bool) -> Result<()> {
        self.settle(tag, Settle::Ack { multiple }).await
    }

    /// Rejects deliveries by tag (`basic.nack`).
    ///
    /// # Errors
    /// As [`Channel::ack`].
    pub async fn nack(&self, tag: DeliveryTag, multiple: bool, requeue: bool) -> Result<()> {
        self.settle(tag, Settle::Nack { multiple, requeue }).await
    }

    /// Rejects one delivery by tag (`basic.reject`).
    ///
    /// # Errors
    /// As [`Channel::ack`].
    pub async fn reject(&self, tag: DeliveryTag, requeue: bool) -> Result<()> {
        self.settle(tag, Settle::Reject { requeue }).await
    }

    async fn settle(&self, tag: DeliveryTag, how: Settle) -> Result<()> {
        self.check_open()?;
        let command = |reply| Command::Settle {
            channel: self.shared.id,
            generation: self.shared.generation,
            tag,
            how,
            reply: Some(reply),
        };
        let gone = || self.shared.gone();
        ask(&self.tx, "settle", self.timeout, gone, command).await
    }

    /// Closes the channel and waits for the broker's close-ok.
    ///
    /// # Errors
    /// The channel's error if it had already closed with one.
    pub async fn close(&self) -> Result<()> {
        if let Some(e) = self.close_reason() {
            return match e {
                Error::ChannelClosed(r) if r.code == ReplyCode::SUCCESS => Ok(()),
                e => Err(e),
            };
        }
        let command = |reply| Command::CloseChannel {
            channel: self.shared.id,
            generation: self.shared.generation,
            code: ReplyCode::SUCCESS,
            text: "bye".into(),
            reply,
        };
        let gone = || self.shared.gone();
        ask(&self.tx, "channel.close", self.timeout, gone, command).await
    }
}

/// A short string from a name, refusing more than 255 octets.
pub(crate) fn short(what: &'static str, s: &str) -> Result<ShortStr> {
    ShortStr::try_from(s).map_err(|e| Error::NameTooLong { what, len: e.0 })
}

pub(crate) fn unexpected_method(method: &Method) -> Error {
    Error::UnexpectedReply(method.name())
}

pub(crate) fn unexpected_reply(reply: &Reply) -> Error {
    match reply {
        Reply::Method(m) => unexpected_method(m),
        Reply::Sent => Error::UnexpectedReply("none"),
        Reply::Get(_) => Error::UnexpectedReply("basic.get-ok"),
    }
}
