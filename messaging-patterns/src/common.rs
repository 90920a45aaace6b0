//! What every pattern shares: confirmed publishing, header access, panics, graceful ends.

use std::panic::AssertUnwindSafe;

use std::sync::Arc;

use amqp_client::{
    BasicProperties, Channel, Confirmation, Consumer, Delivery, Error, FieldTable, FieldValue,
    PublishOptions, ShortStr,
};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How a confirmed publish failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishFailure {
    /// The client failed (channel or connection gone, timeout, ...).
    #[error(transparent)]
    Client(#[from] Error),
    /// The broker refused the message.
    #[error("the broker refused the message (basic.nack)")]
    Nacked,
    /// It was mandatory and no queue took it.
    #[error("no queue is bound for routing key {routing_key:?} on exchange {exchange:?}")]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key published with.
        routing_key: String,
    },
}

/// Publishes on a channel in confirm mode and waits until the broker has the message.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    properties: BasicProperties,
    body: Bytes,
) -> Result<(), PublishFailure> {
    let options = PublishOptions { mandatory };
    let confirm = channel
        .publish(exchange, routing_key, options, properties, body)
        .await?;
    match confirm.await? {
        Confirmation::Ack | Confirmation::NotRequested => Ok(()),
        Confirmation::Nack => Err(PublishFailure::Nacked),
        Confirmation::Returned(_) => Err(PublishFailure::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
        // `Confirmation` is non-exhaustive: an outcome this crate does not know is no ack.
        _ => Err(PublishFailure::Nacked),
    }
}

/// An integer header, whatever integer type it was written with.
pub(crate) fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    properties.headers.as_ref()?.get(name)?.as_i64()
}

/// A string header (`S` or `x` values that are UTF-8).
pub(crate) fn header_str<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match properties.headers.as_ref()?.get(name)? {
        FieldValue::Bytes(b) => std::str::from_utf8(b).ok(),
        value => value.as_str(),
    }
}

/// The properties' headers, created empty when absent.
pub(crate) fn headers_mut(properties: &mut BasicProperties) -> &mut FieldTable {
    properties.headers.get_or_insert_with(FieldTable::new)
}

/// Properties for a new message written with a codec: its content type, persistent or not.
pub(crate) fn message_properties(content_type: &'static str, persistent: bool) -> BasicProperties {
    BasicProperties {
        content_type: Some(ShortStr::from_static(content_type)),
        delivery_mode: Some(if persistent {
            BasicProperties::PERSISTENT
        } else {
            BasicProperties::TRANSIENT
        }),
        ..BasicProperties::default()
    }
}

/// The content type of a message, when it is UTF-8.
pub(crate) fn content_type(properties: &BasicProperties) -> Option<&str> {
    properties
        .content_type
        .as_ref()
        .and_then(|c| c.to_str().ok())
}

/// `prefix` + `name`: every pattern's queue and exchange names go through this.
pub(crate) fn prefixed(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Runs a future, turning a panic into `Err` with its message (`handler panicked: ...`).
pub(crate) async fn catch_panic<T>(work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| format!("handler panicked: {}", panic_message(&*panic)))
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// Completes once `stop` says true (or its sender is gone). The watch's guard is dropped
/// before returning, so this can sit in a `select!` whose other branches await.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The next delivery, or `None` when asked to stop or the consumer ended.
pub(crate) async fn next_or_stop(
    consumer: &mut Consumer,
    stop: &mut watch::Receiver<bool>,
) -> Option<amqp_client::Result<Delivery>> {
    tokio::select! {
        next = consumer.next() => next,
        () = stopped(stop) => None,
    }
}

/// Hands each delivery to `handle`, each on its own task and at most `concurrency` at once,
/// until `stop` says true or the consumer ends; then [`finish`]es on `channel` once the
/// running handlers are done.
///
/// # Errors
/// The consumer's error, when it ended with one.
pub(crate) async fn consume_concurrently<H, F>(
    mut consumer: Consumer,
    channel: &Channel,
    concurrency: usize,
    mut stop: watch::Receiver<bool>,
    handle: H,
) -> amqp_client::Result<()>
where
    H: Fn(Delivery) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let result = loop {
        // Waiting for a free handler before taking the next delivery leaves the rest
        // prefetched, where shutdown can hand them back.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = stopped(&mut stop) => break Ok(()),
        };
        let Ok(permit) = permit else { break Ok(()) };
        let delivery = match next_or_stop(&mut consumer, &mut stop).await {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        };
        let handled = handle(delivery);
        tasks.spawn(async move {
            handled.await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    };
    finish(consumer, channel, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    result
}

/// Graceful end of a consumer: no more deliveries, the prefetched ones back to the queue,
/// the running handlers finish and settle (`running`), then the channel closes.
pub(crate) async fn finish(
    mut consumer: Consumer,
    channel: &Channel,
    running: impl Future<Output = ()>,
) {
    if let Err(e) = consumer.cancel().await {
        tracing::debug!(error = %e, "cancelling a consumer");
    }
    // Dropping the consumer nacks with requeue what it buffered and nobody took.
    drop(consumer);
    running.await;
    if let Err(e) = channel.close().await {
        tracing::debug!(error = %e, "closing a consumer's channel");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_any_integer_and_both_string_kinds() {
        let mut props = BasicProperties::default();
        assert_eq!(header_int(&props, "x-retry-count"), None);
        headers_mut(&mut props).insert("x-retry-count", 3i8);
        headers_mut(&mut props).insert("a", "text");
        headers_mut(&mut props).insert("b", Bytes::from_static(b"octets"));
        assert_eq!(header_int(&props, "x-retry-count"), Some(3));
        assert_eq!(header_str(&props, "a"), Some("text"));
        assert_eq!(header_str(&props, "b"), Some("octets"));
        assert_eq!(prefixed("svc.", "jobs"), "svc.jobs");
    }
}
