//! What handles ask the driver task to do.

use std::sync::Arc;
use std::time::Duration;

use amqp_wire::connection::Delivery as WireDelivery;
use amqp_wire::methods::BasicPublish;
use amqp_wire::{BasicProperties, ChannelId, DeliveryTag, LongStr, Method, ReplyCode};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::channel::ChannelShared;
use crate::consumer::{ConsumerEnd, ConsumerItem};
use crate::error::{Error, Result};
use crate::publish::Confirmation;

/// Sends the command `command` builds around a reply sender to the driver, and waits for the
/// reply: at most `limit`, else [`Error::Timeout`] naming `operation`. `gone` is the error
/// when the driver cannot take the command or drops its reply (the connection ended).
pub(crate) async fn ask<T>(
    tx: &mpsc::Sender<Command>,
    operation: &'static str,
    limit: Duration,
    gone: impl Fn() -> Error,
    command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
) -> Result<T> {
    let (reply, rx) = oneshot::channel();
    let exchange = async {
        tx.send(command(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| Error::Timeout {
            operation,
            after: limit,
        })?
}

/// Queues a command for the driver without waiting for an answer. The queue is bounded: when
/// it is full (the socket does not drain), waits at most `limit`, else [`Error::Timeout`]
/// naming `operation`. `gone` is the error when the driver is gone.
pub(crate) async fn send(
    tx: &mpsc::Sender<Command>,
    operation: &'static str,
    limit: Duration,
    gone: impl Fn() -> Error,
    command: Command,
) -> Result<()> {
    // Room in the queue, the usual case: no timer armed.
    let command = match tx.try_send(command) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(gone()),
        Err(mpsc::error::TrySendError::Full(command)) => command,
    };
    match tokio::time::timeout(limit, tx.send(command)).await {
        Ok(sent) => sent.map_err(|_| gone()),
        Err(_) => Err(Error::Timeout {
            operation,
            after: limit,
        }),
    }
}

/// The answer to a synchronous request.
#[derive(Debug)]
pub(crate) enum Reply {
    Method(Method),
    /// Sent with `nowait`: no reply comes.
    Sent,
    /// Boxed: a message is much larger than the other replies, and gets are rare.
    Get(Option<Box<(WireDelivery, u32)>>),
}

/// Where a consumer's deliveries go, registered with its `basic.consume`.
#[derive(Debug)]
pub(crate) struct ConsumerSink {
    pub(crate) tx: mpsc::Sender<ConsumerItem>,
    /// Octets the buffer may still take: each buffered delivery holds its size.
    pub(crate) budget: Arc<Semaphore>,
    /// The whole budget.
    pub(crate) budget_total: usize,
    pub(crate) end: ConsumerEnd,
    pub(crate) no_ack: bool,
    /// It consumes a stream: see [`Settle::give_back`].
    pub(crate) stream: bool,
    /// The application cancelled it: a delivery that finds the buffer full goes back to the
    /// broker instead of waiting (and holding the socket) for a read that may never come.
    pub(crate) cancelling: bool,
}

/// A publish's outcome slot, with the confirm-window permit it holds until then.
#[derive(Debug)]
pub(crate) struct ConfirmSlot {
    pub(crate) tx: oneshot::Sender<Result<Confirmation>>,
    /// The message itself, kept only when `Recovery::republish` may send it again.
    pub(crate) message: Option<Box<(BasicPublish, BasicProperties, Bytes)>>,
    /// The slot's place in the confirm window. Dropping the slot gives it back; the broker's
    /// confirms hand it to [`crate::router::Router`] instead, which gives back a whole batch
    /// of places at once.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// How a delivery is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack { multiple: bool },
    Nack { multiple: bool, requeue: bool },
    Reject { requeue: bool },
}

impl Settle {
    /// How to hand back a delivery nobody will read: a nack with requeue, but an ack for one
    /// delivered to a stream consumer. RabbitMQ closes the connection with 540 for a nack or
    /// reject of a stream delivery, and a stream loses nothing: the ack only returns the
    /// consumer's credit. Decided by what the consumer was registered on, never by the
    /// message's headers: any publisher can set `x-stream-offset`, and acking a classic or
    /// quorum queue's message would delete it.
    pub(crate) fn give_back(stream: bool) -> Self {
        if stream {
            Self::Ack { multiple: false }
        } else {
            Self::Nack {
                multiple: false,
                requeue: true,
            }
        }
    }
}

#[derive(Debug)]
// A publish carries its properties inline: boxing them would cost an allocation per publish,
// more than moving the larger command through the queue.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    OpenChannel {
        reply: oneshot::Sender<Result<Arc<ChannelShared>>>,
    },
    Call {
        channel: ChannelId,
        generation: u64,
        method: Method,
        reply: oneshot::Sender<Result<Reply>>,
        consumer: Option<ConsumerSink>,
    },
    Publish {
        channel: ChannelId,
        generation: u64,
        publish: BasicPublish,
        properties: BasicProperties,
        body: Bytes,
        slot: ConfirmSlot,
    },
    Settle {
        channel: ChannelId,
        generation: u64,
        /// The tag as the application knows it (see `ChannelShared::tag_base`).
        tag: DeliveryTag,
        how: Settle,
        /// Told whether the engine sent it (`Channel`'s settles by tag wait for it).
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    ListenReturns {
        channel: ChannelId,
        generation: u64,
        tx: mpsc::Sender<amqp_wire::connection::Returned>,
    },
    CloseChannel {
        channel: ChannelId,
        generation: u64,
        code: ReplyCode,
        text: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        code: ReplyCode,
        text: String,
        reply: oneshot::Sender<Result<()>>,
    },
    UpdateSecret {
        secret: LongStr,
        reason: String,
        reply: oneshot::Sender<Result<Reply>>,
    },
}
