//! Handlers: the [`Handler`] trait, the handle they settle and publish with, the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use amqp_client::{BasicProperties, Delivery, ShortStr};
use bytes::Bytes;

use super::publisher::Publisher;
use crate::common::PublishFailure;

/// A boxed future, for the object-safe side of [`Handler`].
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message handed to a handler.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Message {
    /// The body.
    pub body: Bytes,
    /// The properties.
    pub properties: BasicProperties,
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// True when delivered before without being settled.
    pub redelivered: bool,
}

/// A handler's failure: the message goes to the consumer's `on_failure`, and the instance
/// is shut down and replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError(pub String);

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// What a handler settles its message and publishes with. A message the handler leaves
/// unsettled is acked when it returns `Ok`; when it fails, the consumer's `on_failure`
/// decides (requeued, retried later or dead-lettered, and dead-lettered in any case after
/// `max_redeliveries` failures).
///
/// Publishing goes through a channel of the consumer's own, apart from the one it consumes
/// on: a publish the broker refuses (an exchange that does not exist) fails that publish
/// only, and the channel is opened again for the next.
#[derive(Debug)]
pub struct MessageHandle {
    delivery: Delivery,
    publisher: Publisher,
    settled: AtomicBool,
}

impl MessageHandle {
    pub(crate) fn new(delivery: Delivery, publisher: Publisher) -> Self {
        Self {
            delivery,
            publisher,
            settled: AtomicBool::new(false),
        }
    }

    /// The delivery being handled.
    pub(crate) fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// The message as handlers see it.
    pub(crate) fn message(&self) -> Message {
        let d = &self.delivery;
        Message {
            body: d.body.clone(),
            properties: d.properties.clone(),
            exchange: d.exchange.to_string(),
            routing_key: d.routing_key.to_string(),
            redelivered: d.redelivered,
        }
    }

    /// True once the handler (or the dispatcher) settled the message.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Acknowledges the message.
    ///
    /// # Errors
    /// When the channel is gone (the broker then redelivers it) or it was settled already.
    pub async fn ack(&self) -> Result<(), HandlerError> {
        self.settled.store(true, Ordering::Release);
        Ok(self.delivery.ack().await?)
    }

    /// Rejects the message, requeued or not (dead-lettered when its queue has a
    /// dead-letter exchange).
    ///
    /// # Errors
    /// As [`MessageHandle::ack`].
    pub async fn nack(&self, requeue: bool) -> Result<(), HandlerError> {
        self.settled.store(true, Ordering::Release);
        Ok(self.delivery.nack(requeue).await?)
    }

    /// Rejects the message (`basic.reject`), requeued or not.
    ///
    /// # Errors
    /// As [`MessageHandle::ack`].
    pub async fn reject(&self, requeue: bool) -> Result<(), HandlerError> {
        self.settled.store(true, Ordering::Release);
        Ok(self.delivery.reject(requeue).await?)
    }

    /// Publishes a message and waits for the broker's confirm.
    ///
    /// # Errors
    /// When the broker refused or returned it (mandatory), or the channel is gone.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        properties: BasicProperties,
        body: Bytes,
    ) -> Result<(), HandlerError> {
        self.publisher
            .publish(exchange, routing_key, mandatory, properties, body)
            .await
            .map_err(|e: PublishFailure| HandlerError(e.to_string()))
    }

    /// Publishes `body` to the message's `reply_to` with its `correlation_id`; does nothing
    /// for a message without `reply_to`.
    ///
    /// # Errors
    /// As [`MessageHandle::publish`].
    pub async fn reply(
        &self,
        mut properties: BasicProperties,
        body: Bytes,
    ) -> Result<(), HandlerError> {
        let Some(reply_to) = reply_to(&self.delivery.properties) else {
            return Ok(());
        };
        properties.correlation_id = self.delivery.properties.correlation_id.clone();
        self.publish("", reply_to, false, properties, body).await
    }

    /// Acks a message the handler left unsettled after it succeeded.
    pub(crate) async fn ack_unless_settled(&self) {
        if self.is_settled() {
            return;
        }
        if let Err(e) = self.ack().await {
            tracing::warn!(error = %e, "could not settle a message; the broker redelivers it");
        }
    }
}

/// The string properties by their pika names (`content_type`, ..., `type`, ...), set or not.
pub(crate) fn string_properties(p: &BasicProperties) -> [(&'static str, Option<&ShortStr>); 10] {
    [
        ("content_type", p.content_type.as_ref()),
        ("content_encoding", p.content_encoding.as_ref()),
        ("correlation_id", p.correlation_id.as_ref()),
        ("reply_to", p.reply_to.as_ref()),
        ("expiration", p.expiration.as_ref()),
        ("message_id", p.message_id.as_ref()),
        ("type", p.kind.as_ref()),
        ("user_id", p.user_id.as_ref()),
        ("app_id", p.app_id.as_ref()),
        ("cluster_id", p.cluster_id.as_ref()),
    ]
}

/// The numeric properties by their pika names, set or not.
pub(crate) fn number_properties(p: &BasicProperties) -> [(&'static str, Option<u64>); 3] {
    [
        ("delivery_mode", p.delivery_mode.map(u64::from)),
        ("priority", p.priority.map(u64::from)),
        ("timestamp", p.timestamp),
    ]
}

/// The `reply_to` of a message, when it has a usable one.
pub(crate) fn reply_to(properties: &BasicProperties) -> Option<&str> {
    properties
        .reply_to
        .as_ref()
        .and_then(|r: &ShortStr| r.to_str().ok())
        .filter(|r| !r.is_empty())
}

/// A message handler. Each consumer instance owns one; an instance whose `consume` fails or
/// panics is shut down and replaced by a fresh one from the registry's factory.
///
/// ```
/// use messaging_patterns::dispatcher::{Handler, HandlerError, Message, MessageHandle};
///
/// struct Count(u64);
///
/// impl Handler for Count {
///     async fn consume(&mut self, message: Message, _: &MessageHandle) -> Result<(), HandlerError> {
///         self.0 += 1;
///         println!("#{} on {}: {} octets", self.0, message.routing_key, message.body.len());
///         Ok(()) // acked, as it was left unsettled
///     }
/// }
/// ```
pub trait Handler: Send + 'static {
    /// Handles one message. Return `Ok` to ack it (unless settled through `handle`), `Err`
    /// to hand it to the consumer's `on_failure` and have this instance replaced.
    fn consume(
        &mut self,
        message: Message,
        handle: &MessageHandle,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called once when the instance stops: on shutdown, or before it is replaced.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How handling a message failed, inside the dispatcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The handler failed: the consumer's `on_failure` applies.
    Handler(String),
    /// The message could not even be handed to the handler (it cannot be put into a
    /// process's environment, say): it goes straight to the dead-letter queue.
    Undeliverable(String),
}

impl Failure {
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::Handler(m) | Self::Undeliverable(m) => m,
        }
    }
}

/// [`Handler`] made object-safe, so the registry can hold factories of any handler type.
pub(crate) trait DynHandler: Send {
    fn consume<'a>(
        &'a mut self,
        message: Message,
        handle: &'a MessageHandle,
    ) -> BoxFuture<'a, Result<(), Failure>>;
    fn shutdown(&mut self) -> BoxFuture<'_, ()>;
    /// True when the handler replaces its own failed instance (a Python worker does): the
    /// dispatcher then keeps it after a failure, pausing only.
    fn self_replacing(&self) -> bool {
        false
    }
}

impl<H: Handler> DynHandler for H {
    fn consume<'a>(
        &'a mut self,
        message: Message,
        handle: &'a MessageHandle,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            Handler::consume(self, message, handle)
                .await
                .map_err(|e| Failure::Handler(e.0))
        })
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(Handler::shutdown(self))
    }
}

/// Makes a fresh handler instance.
pub(crate) type Factory = Arc<dyn Fn() -> Box<dyn DynHandler> + Send + Sync>;

/// The handlers a configuration may name, each with the factory of its instances.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a handler under `name`; `factory` makes each instance (at start, and to
    /// replace one that failed).
    pub fn register<H, F>(&mut self, name: &str, factory: F) -> &mut Self
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let factory: Factory = Arc::new(move || Box::new(factory()) as Box<dyn DynHandler>);
        self.factories.insert(name.to_owned(), factory);
        self
    }

    /// The registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    pub(crate) fn factory(&self, name: &str) -> Option<Factory> {
        self.factories.get(name).cloned()
    }
}
