//! Publish-subscribe: a publisher to a fanout or topic exchange, and subscriptions that get
//! every matching message.
//!
//! # Topology
//!
//! Both sides declare, idempotently, the durable exchange `P` + name (`P` the prefix) of
//! the chosen kind. A subscription declares its queue and binds it once per routing-key
//! pattern (`*` one word, `#` any words, for topic exchanges):
//!
//! ```text
//! default    exclusive, auto-delete, server-named queue: gone with its subscriber
//! durable    durable queue P + name: it keeps the messages published while the subscriber
//!            is down
//! ```
//!
//! # Wire sequence
//!
//! ```text
//! publisher:    exchange.declare; confirm.select
//!   publish     basic.publish exchange key; wait basic.ack
//! subscription: exchange.declare; queue.declare; queue.bind (per pattern); basic.qos;
//!               basic.consume
//!   message     basic.deliver → decoded → Message::ack (basic.ack); a message the codec
//!               cannot read is rejected without requeue (dead-lettered if the queue has a
//!               dead-letter exchange) and reported as an error item
//! ```
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use messaging_patterns::codec::Json;
//! use messaging_patterns::pubsub::{ExchangeType, Publisher, SubscribeOptions, Subscription};
//!
//! # async fn example(conn: amqp_client::Connection) -> Result<(), messaging_patterns::pubsub::PubSubError> {
//! let codec = Json::<String>::new();
//! let mut prices = Subscription::subscribe(
//!     &conn, "prices", ExchangeType::Topic, &["stock.*.nyse"], codec.clone(), SubscribeOptions::default(),
//! ).await?;
//! let publisher = Publisher::declare(&conn, "prices", ExchangeType::Topic, codec, "").await?;
//! publisher.publish("stock.ibm.nyse", &"141.5".to_owned()).await?;
//! if let Some(message) = prices.next().await {
//!     let message = message?;
//!     println!("{}: {}", message.routing_key, message.payload);
//!     message.ack().await?;
//! }
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use amqp_client::{
    BasicProperties, Channel, Connection, Consumer, Delivery, ExchangeDeclareOptions, ExchangeKind,
    FieldTable, QueueDeclareOptions,
};
use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::task::JoinHandle;

use crate::codec::{Codec, CodecError};
use crate::common::{
    PublishFailure, content_type, message_properties, prefixed, publish_confirmed,
};

/// What can go wrong in publish-subscribe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// The client failed: a declare refused, the channel or connection gone, a timeout.
    #[error(transparent)]
    Client(#[from] amqp_client::Error),
    /// A message could not be encoded, or one received could not be decoded (it was rejected).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The broker refused a publish (`basic.nack`).
    #[error("the broker refused the message (basic.nack)")]
    Nacked,
}

impl From<PublishFailure> for PubSubError {
    fn from(e: PublishFailure) -> Self {
        match e {
            PublishFailure::Client(e) => Self::Client(e),
            // Publishes are not mandatory: an unrouted message is simply not delivered.
            PublishFailure::Nacked | PublishFailure::Unroutable { .. } => Self::Nacked,
        }
    }
}

/// The kind of exchange messages are published to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeType {
    /// Every subscriber gets every message; routing keys are ignored.
    #[default]
    Fanout,
    /// Subscribers get the messages whose routing key matches one of their patterns.
    Topic,
}

impl ExchangeType {
    fn kind(self) -> ExchangeKind {
        match self {
            Self::Fanout => ExchangeKind::Fanout,
            Self::Topic => ExchangeKind::Topic,
        }
    }
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeType,
) -> Result<(), PubSubError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    Ok(channel.exchange_declare(name, kind.kind(), options).await?)
}

/// Publishes to an exchange, waiting for each message's confirm.
#[derive(Clone, Debug)]
pub struct Publisher<C: Codec> {
    channel: Channel,
    exchange: String,
    codec: C,
    persistent: bool,
}

impl<C: Codec> Publisher<C> {
    /// Declares the exchange `prefix` + `exchange` and opens a channel in confirm mode.
    ///
    /// # Errors
    /// 406 when the exchange exists with another kind.
    pub async fn declare(
        conn: &Connection,
        exchange: &str,
        kind: ExchangeType,
        codec: C,
        prefix: &str,
    ) -> Result<Self, PubSubError> {
        let exchange = prefixed(prefix, exchange);
        let channel = conn.open_channel().await?;
        declare_exchange(&channel, &exchange, kind).await?;
        channel.confirm_select().await?;
        Ok(Self {
            channel,
            exchange,
            codec,
            persistent: true,
        })
    }

    /// The same publisher with transient messages (not written to disk by durable queues).
    pub fn transient(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// The exchange's full name.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Publishes a message and waits until the broker has it. A message no subscription
    /// matches is dropped by the broker, which is not an error.
    ///
    /// # Errors
    /// [`PubSubError::Nacked`] when the broker refused it, [`PubSubError::Codec`] when it
    /// cannot be encoded.
    pub async fn publish(&self, routing_key: &str, message: &C::Item) -> Result<(), PubSubError> {
        let body = self.codec.encode(message)?;
        let props = message_properties(self.codec.content_type(), self.persistent);
        publish_confirmed(
            &self.channel,
            &self.exchange,
            routing_key,
            false,
            props,
            body,
        )
        .await?;
        Ok(())
    }
}

/// Options of [`Subscription::subscribe`].
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    /// Put before the exchange's and the durable queue's names.
    pub prefix: String,
    /// A durable queue of this name (after the prefix) that keeps messages while the
    /// subscriber is down; `None` for an exclusive auto-delete queue.
    pub durable_queue: Option<String>,
    /// Unacknowledged messages the broker sends ahead; 0 means 100.
    pub prefetch: u16,
    /// Extra queue arguments, such as `x-dead-letter-exchange` for rejected messages.
    pub arguments: FieldTable,
}

/// A received message, decoded. Ack it once handled; dropping it unsettled leaves it
/// unacknowledged until the channel closes, when the broker redelivers it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Message<T> {
    /// The decoded message.
    pub payload: T,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its properties.
    pub properties: BasicProperties,
    // Shared so that `Subscription::handle` can settle it after the handler consumed the
    // message.
    delivery: Arc<Delivery>,
}

impl<T> Message<T> {
    /// Acknowledges the message.
    ///
    /// # Errors
    /// When the channel is gone (the broker then redelivers it).
    pub async fn ack(&self) -> Result<(), PubSubError> {
        Ok(self.delivery.ack().await?)
    }

    /// Rejects the message, requeued or not (dead-lettered when the queue has a dead-letter
    /// exchange, dropped otherwise).
    ///
    /// # Errors
    /// When the channel is gone.
    pub async fn reject(&self, requeue: bool) -> Result<(), PubSubError> {
        Ok(self.delivery.reject(requeue).await?)
    }
}

/// A subscription: a [`Stream`] of decoded [`Message`]s.
pub struct Subscription<C: Codec> {
    queue: String,
    channel: Channel,
    durable: bool,
    stream: BoxStream<'static, Result<Message<C::Item>, PubSubError>>,
}

impl<C: Codec> std::fmt::Debug for Subscription<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Subscription<C> {
    /// Declares the exchange and the subscription's queue, binds the queue with each pattern
    /// (one binding with an empty key when `patterns` is empty), and starts consuming.
    ///
    /// # Errors
    /// When a declare or bind is refused, or the consume fails.
    pub async fn subscribe(
        conn: &Connection,
        exchange: &str,
        kind: ExchangeType,
        patterns: &[&str],
        codec: C,
        options: SubscribeOptions,
    ) -> Result<Self, PubSubError> {
        let exchange = prefixed(&options.prefix, exchange);
        let channel = conn.open_channel().await?;
        declare_exchange(&channel, &exchange, kind).await?;
        let durable = options.durable_queue.is_some();
        let declare = QueueDeclareOptions {
            durable,
            exclusive: !durable,
            auto_delete: !durable,
            arguments: options.arguments.clone(),
            ..Default::default()
        };
        let name = options
            .durable_queue
            .as_deref()
            .map(|q| prefixed(&options.prefix, q))
            .unwrap_or_default();
        let queue = channel
            .queue_declare(&name, declare)
            .await?
            .name
            .to_string();
        let patterns = if patterns.is_empty() {
            &[""][..]
        } else {
            patterns
        };
        for pattern in patterns {
            channel
                .queue_bind(&queue, &exchange, pattern, FieldTable::new())
                .await?;
        }
        let prefetch = if options.prefetch == 0 {
            100
        } else {
            options.prefetch
        };
        channel.qos(prefetch, false).await?;
        let consumer = channel.consume(&queue, Default::default()).await?;
        Ok(Self {
            queue,
            channel,
            durable,
            stream: decoded(consumer, codec).boxed(),
        })
    }

    /// The queue's name (the broker's choice for a non-durable subscription).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Runs `handler` for each message, one at a time, on a task: acked when it returns
    /// `Ok`, rejected without requeue when it returns `Err`. The task ends with the
    /// subscription's error; dropping its handle does not stop it, aborting it does.
    pub fn handle<H, F, E>(mut self, handler: H) -> JoinHandle<Result<(), PubSubError>>
    where
        H: Fn(Message<C::Item>) -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        tokio::spawn(async move {
            while let Some(message) = self.stream.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(PubSubError::Codec(e)) => {
                        tracing::warn!(queue = %self.queue, error = %e, "rejected an unreadable message");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let delivery = message.delivery.clone();
                // The error as text at once: `E` need not be `Send`.
                match handler(message).await.map_err(|e| e.to_string()) {
                    Ok(()) => settled(delivery.ack().await)?,
                    Err(error) => {
                        tracing::warn!(queue = %self.queue, %error, "subscriber failed; rejecting");
                        settled(delivery.reject(false).await)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Stops the subscription and closes its channel; a durable queue stays (see
    /// [`Subscription::unsubscribe`]), a non-durable one goes.
    ///
    /// # Errors
    /// When the channel had failed.
    pub async fn close(self) -> Result<(), PubSubError> {
        drop(self.stream);
        Ok(self.channel.close().await?)
    }

    /// Stops the subscription and deletes its queue, durable or not.
    ///
    /// # Errors
    /// When the delete is refused or the channel had failed.
    pub async fn unsubscribe(self) -> Result<(), PubSubError> {
        drop(self.stream);
        if self.durable {
            self.channel
                .queue_delete(&self.queue, Default::default())
                .await?;
        }
        Ok(self.channel.close().await?)
    }
}

impl<C: Codec> Stream for Subscription<C> {
    type Item = Result<Message<C::Item>, PubSubError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// A settle's result, where a message the handler settled itself is no error.
fn settled(result: amqp_client::Result<()>) -> Result<(), PubSubError> {
    match result {
        Err(amqp_client::Error::Usage(_)) => Ok(()),
        other => Ok(other?),
    }
}

/// The consumer's deliveries, decoded; an unreadable one is rejected and yields an error.
fn decoded<C: Codec>(
    consumer: Consumer,
    codec: C,
) -> impl Stream<Item = Result<Message<C::Item>, PubSubError>> + Send + 'static {
    consumer.then(move |delivery| {
        let codec = codec.clone();
        async move {
            let delivery = delivery?;
            let decoded = codec.decode(content_type(&delivery.properties), delivery.body.clone());
            match decoded {
                Ok(payload) => Ok(Message {
                    payload,
                    routing_key: delivery.routing_key.to_string(),
                    properties: delivery.properties.clone(),
                    delivery: Arc::new(delivery),
                }),
                Err(e) => {
                    delivery.reject(false).await?;
                    Err(e.into())
                }
            }
        }
    })
}
