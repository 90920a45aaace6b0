//! Publishing: [`Channel::publish`], its [`Confirm`] future, confirm mode and returned
//! messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use amqp_wire::BasicProperties;
use amqp_wire::connection::Returned;
use amqp_wire::methods::{BasicPublish, ConfirmSelect};
use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, mpsc, oneshot};

use crate::channel::{Channel, ChannelShared, HandleGuard, short};
use crate::command::{self, Command, ConfirmSlot};
use crate::error::{Error, Result};
use crate::options::PublishOptions;

/// The outcome of a publish.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Confirmation {
    /// The broker took responsibility for the message.
    Ack,
    /// The broker refused it (a full queue with `x-overflow: reject-publish`, an internal
    /// error): publish it again or give up.
    Nack,
    /// It was mandatory and no queue took it; the broker returned it, then acked.
    Returned(Box<Returned>),
    /// The channel is not in confirm mode: the message was handed to the connection, and
    /// nothing more will be known of it.
    NotRequested,
}

/// A publish's pending outcome: a future of its [`Confirmation`].
///
/// Publishes can be pipelined: publish thousands, then await their `Confirm`s in any order.
///
/// A `Confirm` has a deadline, the connection's `confirm_timeout` counted from when it is
/// first awaited: a broker that never answers (a quorum queue without a majority, say)
/// resolves it with [`Error::OutcomeUnknown`], never with an ack or a nack. The message may
/// still reach its queues; its place in the channel's confirm window stays taken until the
/// broker answers or the channel ends, so a broker that stopped confirming stops the
/// publisher instead of letting unconfirmed messages pile up.
///
/// ```no_run
/// # async fn example(channel: amqp_client::Channel) -> amqp_client::Result<()> {
/// use amqp_client::{BasicProperties, Confirmation, Error, PublishOptions};
/// let confirm = channel
///     .publish("", "jobs", PublishOptions::default(), BasicProperties::default(), "hi")
///     .await?;
/// match confirm.await {
///     Ok(Confirmation::Ack) => {}                     // the broker has it
///     Ok(Confirmation::Nack) => { /* refused: publish again or give up */ }
///     Ok(Confirmation::Returned(r)) => { /* unroutable: r.reply_text says why */ }
///     Ok(_) => {}                                     // not in confirm mode
///     Err(Error::OutcomeUnknown) => { /* no answer in time, or the connection was lost */ }
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a Confirm says whether the broker took the message"]
pub struct Confirm {
    rx: oneshot::Receiver<Result<Confirmation>>,
    channel: Arc<ChannelShared>,
    /// Keeps the channel open until the outcome is known.
    _guard: Arc<HandleGuard>,
    limit: Duration,
    /// Armed when the outcome is not there at the first poll.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for Confirm {
    type Output = Result<Confirmation>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(outcome)) => {
                return Poll::Ready(outcome.map_err(|e| self.channel.explain(e)));
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Err(self.channel.gone())),
            Poll::Pending => {}
        }
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::OutcomeUnknown)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A stream of the mandatory messages the broker returned on a channel that is not in
/// confirm mode (in confirm mode they come as [`Confirmation::Returned`]).
#[derive(Debug)]
pub struct Returns {
    rx: mpsc::Receiver<Returned>,
    /// Keeps the channel open while someone listens.
    _guard: Arc<HandleGuard>,
}

impl Stream for Returns {
    type Item = Returned;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Returned>> {
        self.rx.poll_recv(cx)
    }
}

impl Channel {
    /// Puts the channel in confirm mode (`confirm.select`): every later publish's
    /// [`Confirm`] resolves with the broker's ack, nack or return.
    ///
    /// # Errors
    /// 406 / [`Error::Usage`] on a transactional channel.
    pub async fn confirm_select(&self) -> Result<()> {
        self.call(ConfirmSelect { no_wait: false }).await?;
        self.shared.confirm_mode.store(true, Ordering::Release);
        Ok(())
    }

    /// Publishes a message. Waits while the connection's output is full (a slow socket),
    /// while the broker blocks publishers, and, in confirm mode, while the channel already
    /// has `confirm_window` publishes unconfirmed. The returned [`Confirm`] resolves with the
    /// outcome.
    ///
    /// # Errors
    /// [`Error::Blocked`] when the broker stays blocked past `blocked_timeout`;
    /// [`Error::Timeout`] when the confirm window stays full; the channel's error if closed.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        options: PublishOptions,
        properties: BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<Confirm> {
        self.check_open()?;
        let body = body.into();
        let publish = BasicPublish {
            exchange: short("exchange", exchange)?,
            routing_key: short("routing key", routing_key)?,
            mandatory: options.mandatory,
            immediate: false,
        };
        self.shared.conn.wait_unblocked().await?;
        let permit = self.confirm_place().await?;
        let (tx, rx) = oneshot::channel();
        let message = (permit.is_some() && self.shared.conn.republish)
            .then(|| Box::new((publish.clone(), properties.clone(), body.clone())));
        let command = Command::Publish {
            channel: self.shared.id,
            generation: self.shared.generation,
            publish,
            properties,
            body,
            slot: ConfirmSlot {
                tx,
                message,
                permit,
            },
        };
        let gone = || self.shared.gone();
        command::send(&self.tx, "publish", self.timeout, gone, command).await?;
        Ok(Confirm {
            rx,
            channel: self.shared.clone(),
            _guard: self.guard.clone(),
            limit: self.shared.conn.limits.confirm_timeout,
            deadline: None,
        })
    }

    /// In confirm mode, a place in the channel's confirm window, waiting at most the
    /// channel's timeout for one; outside confirm mode, none.
    async fn confirm_place(&self) -> Result<Option<OwnedSemaphorePermit>> {
        if !self.shared.confirm_mode.load(Ordering::Acquire) {
            return Ok(None);
        }
        // While the window has room, take a place without arming a timeout (a clock read
        // and a timer handle per publish); only a full window waits, and only so long.
        let permit = match self.shared.window.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => return Err(self.shared.gone()),
            Err(TryAcquireError::NoPermits) => {
                let acquire = self.shared.window.clone().acquire_owned();
                tokio::time::timeout(self.timeout, acquire)
                    .await
                    .map_err(|_| Error::Timeout {
                        operation: "confirm window",
                        after: self.timeout,
                    })?
            }
        };
        permit.map(Some).map_err(|_| self.shared.gone())
    }

    /// The returned mandatory messages of this channel (outside confirm mode), buffered up
    /// to `capacity`; a return that finds the buffer full is logged and dropped.
    ///
    /// # Errors
    /// The channel's error if it closed.
    pub async fn returns(&self, capacity: usize) -> Result<Returns> {
        self.check_open()?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let command = Command::ListenReturns {
            channel: self.shared.id,
            generation: self.shared.generation,
            tx,
        };
        let gone = || self.shared.gone();
        command::send(&self.tx, "returns", self.timeout, gone, command).await?;
        Ok(Returns {
            rx,
            _guard: self.guard.clone(),
        })
    }
}
