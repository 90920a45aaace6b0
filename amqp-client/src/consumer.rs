//! Consumers as streams of deliveries, and deliveries that can be settled from any task.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use amqp_wire::connection::{Delivery as WireDelivery, UsageError};
use amqp_wire::methods::BasicCancel;
use amqp_wire::{BasicProperties, ChannelId, DeliveryTag, ShortStr};
use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::channel::{Channel, ChannelShared, HandleGuard};
use crate::channel::{short, unexpected_reply};
use crate::command::{Command, Settle};
use crate::command::{ConsumerSink, Reply};
use crate::error::{Error, Result};
use crate::options::ConsumeOptions;
use amqp_wire::Method;
use amqp_wire::methods::{BasicConsume, BasicGet, BasicQos, BasicRecover};
use tokio::sync::oneshot;

/// A consumer's buffer when neither `buffer` nor a prefetch count says otherwise.
const DEFAULT_CONSUMER_BUFFER: usize = 1024;
/// A consumer's buffer in octets when `buffer_bytes` does not say otherwise.
const DEFAULT_CONSUMER_BUFFER_BYTES: usize = 64 << 20;

/// What a consumer's stream carries: a delivery, holding its octets of the buffer's budget
/// until the application takes it.
#[derive(Debug)]
pub(crate) struct ConsumerItem {
    pub(crate) delivery: Delivery,
    pub(crate) charge: Option<OwnedSemaphorePermit>,
}

/// What a delivery costs a consumer's buffer: its body, and its headers as they are on the
/// wire and as they decoded.
pub(crate) fn delivery_cost(delivery: &WireDelivery) -> usize {
    let headers = delivery.properties.headers.as_ref();
    delivery.body.len() + headers.map_or(0, |h| h.encoded_len() + h.decoded_size())
}

/// A message from the broker, with what is needed to settle it.
///
/// `ack`, `nack` and `reject` may be called from any task; each delivery is settled at most
/// once (a second settle is refused before it reaches the broker, which would close the
/// channel with 406 for it).
#[derive(Debug)]
pub struct Delivery {
    /// The consumer it was delivered to; empty for [`Channel::get`].
    pub consumer_tag: ShortStr,
    /// The tag that settles it on its channel.
    pub delivery_tag: DeliveryTag,
    /// True when the broker delivered it before and it was not acknowledged.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body (a slice of the read buffer when it came in one frame).
    pub body: Bytes,
    acker: Acker,
}

#[derive(Debug)]
struct Acker {
    tx: mpsc::Sender<Command>,
    channel: Arc<ChannelShared>,
    /// Consumed with no-ack: nothing to settle.
    no_ack: bool,
    /// Delivered to a stream consumer: handed back with an ack.
    stream: bool,
    settled: AtomicBool,
    /// Keeps the channel open while the delivery may be settled; set when the application
    /// receives it (the driver, which builds deliveries, holds no handle).
    guard: Option<Arc<HandleGuard>>,
}

impl Delivery {
    /// `wire`'s delivery tag is already the application's (see `ChannelShared::tag_base`).
    pub(crate) fn new(
        wire: WireDelivery,
        tx: mpsc::Sender<Command>,
        channel: Arc<ChannelShared>,
        (no_ack, stream): (bool, bool),
    ) -> Self {
        Self {
            consumer_tag: wire.consumer_tag,
            delivery_tag: wire.delivery_tag,
            redelivered: wire.redelivered,
            exchange: wire.exchange,
            routing_key: wire.routing_key,
            properties: wire.properties,
            body: wire.body,
            acker: Acker {
                tx,
                channel,
                no_ack,
                stream,
                settled: AtomicBool::new(false),
                guard: None,
            },
        }
    }

    /// Makes the delivery a handle of its channel, unless it has nothing to settle.
    fn held_by(mut self, guard: &Arc<HandleGuard>) -> Self {
        if !self.acker.no_ack {
            self.acker.guard = Some(guard.clone());
        }
        self
    }

    /// The channel it came on.
    pub fn channel_id(&self) -> ChannelId {
        self.acker.channel.id
    }

    /// Acknowledges this delivery.
    ///
    /// # Errors
    /// [`Error::ChannelClosed`] / [`Error::Connection`] when its channel is gone (the broker
    /// then requeues it); [`Error::Usage`] when it was already settled or came without acks.
    pub async fn ack(&self) -> Result<()> {
        self.settle(Settle::Ack { multiple: false }).await
    }

    /// Acknowledges this delivery and every earlier unsettled one on its channel.
    ///
    /// # Errors
    /// As [`Delivery::ack`].
    pub async fn ack_multiple(&self) -> Result<()> {
        self.settle(Settle::Ack { multiple: true }).await
    }

    /// Rejects this delivery (RabbitMQ's `basic.nack`), requeueing it or not (dead-lettering
    /// it when its queue has a dead-letter exchange).
    ///
    /// # Errors
    /// As [`Delivery::ack`].
    pub async fn nack(&self, requeue: bool) -> Result<()> {
        self.settle(Settle::Nack {
            multiple: false,
            requeue,
        })
        .await
    }

    /// Rejects this delivery with `basic.reject`.
    ///
    /// # Errors
    /// As [`Delivery::ack`].
    pub async fn reject(&self, requeue: bool) -> Result<()> {
        self.settle(Settle::Reject { requeue }).await
    }

    async fn settle(&self, how: Settle) -> Result<()> {
        let acker = &self.acker;
        if acker.no_ack || acker.settled.swap(true, Ordering::AcqRel) {
            return Err(UsageError::UnknownDeliveryTag(self.delivery_tag.0).into());
        }
        if let Some(e) = acker.channel.closed.get() {
            return Err(e.clone());
        }
        if self.delivery_tag.0 <= acker.channel.tag_base.load(Ordering::Acquire) {
            return Err(Error::StaleDelivery(self.delivery_tag.0));
        }
        let command = Command::Settle {
            channel: acker.channel.id,
            generation: acker.channel.generation,
            tag: self.delivery_tag,
            how,
            reply: None,
        };
        let limit = acker.channel.conn.limits.operation_timeout;
        let gone = || acker.channel.gone();
        crate::command::send(&acker.tx, "settle", limit, gone, command).await
    }

    /// Hands an unsettled delivery back to the broker without waiting (used when nobody will
    /// ever read it).
    pub(crate) fn requeue_now(&self) {
        if self.acker.no_ack || self.acker.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let command = Command::Settle {
            channel: self.acker.channel.id,
            generation: self.acker.channel.generation,
            tag: self.delivery_tag,
            how: Settle::give_back(self.acker.stream),
            reply: None,
        };
        if self.acker.tx.try_send(command).is_err() {
            tracing::warn!(
                tag = self.delivery_tag.0,
                "could not requeue an unread delivery; the broker requeues it when the channel closes"
            );
        }
    }
}

/// How a consumer's stream ended, shared between the consumer and the driver.
pub(crate) type ConsumerEnd = Arc<Mutex<Option<Error>>>;

/// A consumer: a [`Stream`] of [`Delivery`]s, bounded (by the channel's prefetch, or the
/// `buffer` of [`crate::ConsumeOptions`]). While the stream is not read, the connection stops
/// reading from the socket instead of buffering without limit.
///
/// The stream ends after [`Consumer::cancel`]; it yields one `Err` and ends when the broker
/// cancels the consumer or its channel or connection closes. Dropping it cancels the consumer
/// and requeues what it had buffered.
///
/// ```no_run
/// # async fn example(channel: amqp_client::Channel) -> amqp_client::Result<()> {
/// use futures_util::StreamExt;
/// let mut consumer = channel.consume("jobs", Default::default()).await?;
/// while let Some(delivery) = consumer.next().await {
///     let delivery = delivery?;
///     println!("{:?}", delivery.body);
///     delivery.ack().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    tag: ShortStr,
    rx: mpsc::Receiver<ConsumerItem>,
    end: ConsumerEnd,
    channel: Channel,
    cancelled: bool,
    finished: bool,
}

impl Consumer {
    pub(crate) fn new(
        tag: ShortStr,
        rx: mpsc::Receiver<ConsumerItem>,
        end: ConsumerEnd,
        channel: Channel,
    ) -> Self {
        Self {
            tag,
            rx,
            end,
            channel,
            cancelled: false,
            finished: false,
        }
    }

    /// The consumer tag.
    pub fn tag(&self) -> &ShortStr {
        &self.tag
    }

    /// Cancels the consumer (`basic.cancel`) and waits for the broker's cancel-ok. Deliveries
    /// already received can still be read from the stream, which then ends.
    ///
    /// # Errors
    /// When the channel or connection is gone, or the broker does not answer in time.
    pub async fn cancel(&mut self) -> Result<()> {
        self.cancelled = true;
        self.channel.cancel_tag(&self.tag).await
    }

    /// The next delivery, or `None` once the stream has ended: the same as
    /// `StreamExt::next`, without importing a stream extension trait.
    ///
    /// ```no_run
    /// # async fn example(channel: amqp_client::Channel) -> amqp_client::Result<()> {
    /// let mut consumer = channel.consume("jobs", Default::default()).await?;
    /// while let Some(delivery) = consumer.recv().await {
    ///     delivery?.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Option<Result<Delivery>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                Poll::Ready(Some(Ok(item.delivery.held_by(&self.channel.guard))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                let end = self.end.lock().ok().and_then(|mut e| e.take());
                Poll::Ready(end.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            item.delivery.requeue_now();
        }
        if !self.cancelled && !self.finished {
            self.channel.cancel_now(&self.tag);
        }
    }
}

/// `basic.cancel` for a consumer that is dropped, without waiting for the reply.
pub(crate) fn cancel_method(tag: &ShortStr) -> BasicCancel {
    BasicCancel {
        consumer_tag: tag.clone(),
        no_wait: false,
    }
}

/// A message taken with [`Channel::get`].
#[derive(Debug)]
pub struct GetMessage {
    /// The message.
    pub delivery: Delivery,
    /// Messages left in the queue.
    pub message_count: u32,
}

impl Channel {
    /// Limits unacknowledged deliveries (`basic.qos`): per consumer created afterwards, or
    /// with `global` for the whole channel (RabbitMQ's meaning; 4.x denies global by default).
    ///
    /// # Errors
    /// When the channel or connection is gone.
    pub async fn qos(&self, prefetch_count: u16, global: bool) -> Result<()> {
        self.call(BasicQos {
            prefetch_size: 0,
            prefetch_count,
            global,
        })
        .await?;
        let kept = match global {
            true => &self.shared.global_prefetch,
            false => &self.shared.prefetch,
        };
        kept.store(u32::from(prefetch_count), Ordering::Relaxed);
        Ok(())
    }

    /// Starts a consumer (`basic.consume`) and returns its stream of deliveries.
    ///
    /// # Errors
    /// 404 for a missing queue, 403 for an exclusive consume of a queue with consumers;
    /// [`Error::Usage`] for a consumer tag already used on this channel.
    pub async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        let capacity = self.consumer_buffer(&options).await?;
        let (tx, rx) = mpsc::channel(capacity);
        let budget = options
            .buffer_bytes
            .unwrap_or(DEFAULT_CONSUMER_BUFFER_BYTES)
            .clamp(1, Semaphore::MAX_PERMITS);
        let end = Arc::new(Mutex::new(None));
        let method = BasicConsume {
            queue: short("queue", queue)?,
            consumer_tag: short("consumer tag", &options.consumer_tag)?,
            no_local: false,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            no_wait: false,
            arguments: options.arguments,
        };
        let sink = ConsumerSink {
            tx,
            budget: Arc::new(Semaphore::new(budget)),
            budget_total: budget,
            end: end.clone(),
            no_ack: options.no_ack,
            // The driver decides when it registers the consumer.
            stream: false,
            cancelling: false,
        };
        match self.request(method.into(), Some(sink)).await? {
            Reply::Method(Method::BasicConsumeOk(ok)) => {
                Ok(Consumer::new(ok.consumer_tag, rx, end, self.clone()))
            }
            other => Err(unexpected_reply(&other)),
        }
    }

    /// How many deliveries a new consumer buffers, so that the broker never has more
    /// unacknowledged deliveries for it than that (see [`ConsumeOptions::buffer`]): sets the
    /// channel's prefetch when none is set, per consumer or channel-wide (which bounds each
    /// consumer too; RabbitMQ 4 may apply it per consumer).
    async fn consumer_buffer(&self, options: &ConsumeOptions) -> Result<usize> {
        let per_consumer = self.shared.prefetch.load(Ordering::Relaxed) as usize;
        let prefetch = match per_consumer {
            0 => self.shared.global_prefetch.load(Ordering::Relaxed) as usize,
            n => n,
        };
        let wanted = options.buffer.unwrap_or(match prefetch {
            0 => DEFAULT_CONSUMER_BUFFER,
            n => n,
        });
        let wanted = wanted.max(1);
        if options.no_ack {
            return Ok(wanted);
        }
        if prefetch == 0 {
            let count = u16::try_from(wanted).unwrap_or(u16::MAX);
            self.qos(count, false).await?;
            return Ok(wanted.max(usize::from(count)));
        }
        Ok(wanted.max(prefetch))
    }

    /// Cancels a consumer by tag (`basic.cancel`); its stream ends. The tag is a `&str` (or
    /// octets, for a tag that is not UTF-8).
    ///
    /// ```no_run
    /// # async fn example(channel: amqp_client::Channel) -> amqp_client::Result<()> {
    /// use amqp_client::ConsumeOptions;
    /// let options = ConsumeOptions { consumer_tag: "worker-1".into(), ..Default::default() };
    /// let _consumer = channel.consume("jobs", options).await?;
    /// channel.cancel("worker-1").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NameTooLong`] for a tag over 255 octets; when the channel or connection is
    /// gone.
    pub async fn cancel(&self, consumer_tag: impl AsRef<[u8]>) -> Result<()> {
        let octets = Bytes::copy_from_slice(consumer_tag.as_ref());
        let tag = ShortStr::from_bytes(octets).map_err(|e| Error::NameTooLong {
            what: "consumer tag",
            len: e.0,
        })?;
        self.cancel_tag(&tag).await
    }

    /// `basic.cancel`, waiting for the cancel-ok.
    async fn cancel_tag(&self, tag: &ShortStr) -> Result<()> {
        self.call(cancel_method(tag)).await.map(drop)
    }

    /// Sends `basic.cancel` without waiting (for a consumer being dropped).
    pub(crate) fn cancel_now(&self, tag: &ShortStr) {
        if self.is_closed() {
            return;
        }
        let (reply, _) = oneshot::channel();
        let command = Command::Call {
            channel: self.shared.id,
            generation: self.shared.generation,
            method: cancel_method(tag).into(),
            reply,
            consumer: None,
        };
        if self.tx.try_send(command).is_err() {
            tracing::warn!(channel = self.shared.id.0, tag = %tag, "could not cancel a dropped consumer");
        }
    }

    /// Takes one message from a queue (`basic.get`), or `None` when it is empty.
    ///
    /// # Errors
    /// 404 for a missing queue.
    pub async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<GetMessage>> {
        match self
            .request(
                BasicGet {
                    queue: short("queue", queue)?,
                    no_ack,
                }
                .into(),
                None,
            )
            .await?
        {
            Reply::Get(None) => Ok(None),
            Reply::Get(Some(got)) => {
                let (wire, message_count) = *got;
                Ok(Some(GetMessage {
                    delivery: Delivery::new(
                        wire,
                        self.tx.clone(),
                        self.shared.clone(),
                        (no_ack, false),
                    )
                    .held_by(&self.guard),
                    message_count,
                }))
            }
            other => Err(unexpected_reply(&other)),
        }
    }

    /// Asks the broker to redeliver every unacknowledged message of the channel
    /// (`basic.recover` with requeue).
    ///
    /// # Errors
    /// When the channel or connection is gone.
    pub async fn recover(&self) -> Result<()> {
        self.call(BasicRecover { requeue: true }).await.map(drop)
    }
}
