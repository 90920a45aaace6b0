//! A consumer's router: takes deliveries from the broker, holds exclusivity keys, hands the
//! rest to the instances; and consumes again when the broker cancels the consumer.
//!
//! ```text
//!  basic.deliver ──▶ router ──(key free)──▶ work queue ──▶ instance 1..consumer_count
//!                      │  ▲                                   │
//!                      │  └────────── done(key) ◀─────────────┘  (after the settle)
//!                      └─(key busy)─▶ parked, per key, in arrival order
//!  basic.cancel  ──▶ not ready; channel.open, basic.qos, basic.consume again after
//!                    1 s, 2 s, 4 s ... 30 s (on_cancel: resubscribe), or the pool fails
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use amqp_client::{BasicProperties, Channel, Connection, Consumer, Delivery};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::config::{ConsumerConfig, ExclusivityKey, KeySource, OnCancel};
use crate::common::{header_str, stopped};

/// A delivery on its way to an instance, with the exclusivity key it holds.
pub(crate) struct Work {
    pub(crate) delivery: Delivery,
    pub(crate) key: Option<String>,
}

/// The longest pause between two attempts to consume again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The channel a consumer consumes on (replaced when it consumes again).
pub(crate) type CurrentChannel = Arc<std::sync::Mutex<Channel>>;

/// Opens a channel with the consumer's prefetch and starts consuming.
pub(crate) async fn subscribe(
    conn: &Connection,
    config: &ConsumerConfig,
) -> Result<(Channel, Consumer), amqp_client::Error> {
    let channel = conn.open_channel().await?;
    channel.qos(config.prefetch_count.get(), false).await?;
    let consumer = channel.consume(&config.queue, Default::default()).await?;
    Ok((channel, consumer))
}

/// Holds the exclusivity keys: a key is busy from the moment its message goes to an
/// instance until the instance reports it settled.
pub(crate) struct Router {
    pub(crate) conn: Connection,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) channel: CurrentChannel,
    pub(crate) ready: Arc<AtomicBool>,
    /// Busy keys, with the deliveries waiting for each.
    pub(crate) busy: HashMap<String, VecDeque<Delivery>>,
    pub(crate) work: mpsc::Sender<Work>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Router {
    pub(crate) async fn run(
        mut self,
        mut consumer: Consumer,
        mut done: mpsc::UnboundedReceiver<Option<String>>,
    ) -> Result<(), amqp_client::Error> {
        let mut stop = self.stop.clone();
        let result = loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break Ok(()),
                Some(key) = done.recv() => self.release(key).await,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.route(delivery).await,
                    Some(Err(e)) => match self.resubscribe(e).await {
                        Ok(Some(again)) => consumer = again,
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    },
                    None => break Ok(()),
                },
            }
        };
        self.ready.store(false, Ordering::Release);
        if let Err(e) = consumer.cancel().await {
            tracing::debug!(error = %e, "cancelling the dispatcher's consumer");
        }
        // Dropping the consumer requeues what it buffered; parked deliveries go back too.
        drop(consumer);
        for (_, parked) in self.busy.drain() {
            for delivery in parked {
                log_settle(delivery.nack(true).await);
            }
        }
        result
    }

    /// After the consumer ended with `error`: consumes again with a backoff (`None` when
    /// asked to stop meanwhile), or gives the error back (`on_cancel: exit`, or the
    /// connection is gone).
    async fn resubscribe(
        &mut self,
        error: amqp_client::Error,
    ) -> Result<Option<Consumer>, amqp_client::Error> {
        self.ready.store(false, Ordering::Release);
        if self.config.on_cancel == OnCancel::Exit || self.conn.is_closed() {
            return Err(error);
        }
        tracing::warn!(consumer = %self.config.name, %error, "consumer ended; consuming again");
        let mut pause = Duration::from_secs(1);
        loop {
            tokio::select! {
                () = stopped(&mut self.stop) => return Ok(None),
                () = tokio::time::sleep(pause) => {}
            }
            match subscribe(&self.conn, &self.config).await {
                Ok((channel, consumer)) => {
                    tracing::info!(consumer = %self.config.name, queue = %self.config.queue, "consuming again");
                    let old = match self.channel.lock() {
                        Ok(mut current) => Some(std::mem::replace(&mut *current, channel)),
                        Err(_) => None,
                    };
                    if let Some(old) = old {
                        // The cancelled consumer's channel: what it still had goes back.
                        let _ = old.close().await;
                    }
                    self.ready.store(true, Ordering::Release);
                    return Ok(Some(consumer));
                }
                Err(e) if self.conn.is_closed() => return Err(e),
                Err(e) => {
                    tracing::warn!(consumer = %self.config.name, error = %e, ?pause, "cannot consume yet");
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn route(&mut self, delivery: Delivery) {
        let key = self.config.exclusivity_key.as_ref().and_then(|k| {
            key_of(
                k,
                &delivery.exchange.to_string(),
                &delivery.routing_key.to_string(),
                &delivery.properties,
                &delivery.body,
            )
        });
        if let Some(key) = &key {
            if let Some(parked) = self.busy.get_mut(key) {
                parked.push_back(delivery);
                return;
            }
            self.busy.insert(key.clone(), VecDeque::new());
        }
        self.send(Work { delivery, key }).await;
    }

    async fn release(&mut self, key: Option<String>) {
        let Some(key) = key else { return };
        let next = self.busy.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(delivery) => {
                self.send(Work {
                    delivery,
                    key: Some(key),
                })
                .await;
            }
            None => {
                self.busy.remove(&key);
            }
        }
    }

    /// Hands work to the instances, waiting for one to be free; on shutdown (or with no
    /// instances left) the message goes back to the queue instead.
    async fn send(&mut self, work: Work) {
        let permit = tokio::select! {
            biased;
            () = stopped(&mut self.stop) => None,
            permit = self.work.reserve() => permit.ok(),
        };
        match permit {
            Some(permit) => permit.send(work),
            None => log_settle(work.delivery.nack(true).await),
        }
    }
}

/// A message's exclusivity key, if it has one.
fn key_of(
    key: &ExclusivityKey,
    exchange: &str,
    routing_key: &str,
    properties: &BasicProperties,
    body: &[u8],
) -> Option<String> {
    let value = match &key.source {
        KeySource::Header(name) => header_str(properties, name).map(str::to_owned).or_else(|| {
            let value = properties.headers.as_ref()?.get(name)?;
            value.as_i64().map(|n| n.to_string())
        }),
        KeySource::RoutingKeyPart(index) => routing_key.split('.').nth(*index).map(str::to_owned),
        KeySource::JsonField(field) => {
            let body: serde_json::Value = serde_json::from_slice(body).ok()?;
            match body.get(field)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        }
    }?;
    if key.per_exchange {
        Some(format!("{exchange}\u{0}{value}"))
    } else {
        Some(value)
    }
}

pub(crate) fn log_settle(result: amqp_client::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not requeue a message; the broker requeues it when the channel closes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::Config;

    fn key(yaml: &str) -> ExclusivityKey {
        let file =
            format!("consumers:\n  - {{ command: [x], queue: q, exclusivity_key: {yaml} }}\n");
        let config = Config::parse(&file, []).unwrap();
        config.consumers[0].exclusivity_key.clone().unwrap()
    }

    #[test]
    fn keys_from_a_json_field_per_consumer_or_per_exchange() {
        let props = BasicProperties::default();
        let body = br#"{"domain": "example.com", "id": 7, "nested": {}}"#;
        let per_consumer = key("{ json_field: domain }");
        let a = key_of(&per_consumer, "a", "rk", &props, body);
        assert_eq!(a.as_deref(), Some("example.com"));
        assert_eq!(
            a,
            key_of(&per_consumer, "b", "rk", &props, body),
            "one key whatever the exchange"
        );
        let numbered = key("{ json_field: id }");
        assert_eq!(
            key_of(&numbered, "a", "rk", &props, body).as_deref(),
            Some("7")
        );
        assert_eq!(
            key_of(&key("{ json_field: nested }"), "a", "rk", &props, body),
            None
        );
        assert_eq!(key_of(&per_consumer, "a", "rk", &props, b"not json"), None);
        let per_exchange = key("{ json_field: domain, scope: exchange }");
        assert_ne!(
            key_of(&per_exchange, "a", "rk", &props, body),
            key_of(&per_exchange, "b", "rk", &props, body),
            "two exchanges, two keys"
        );
        let part = key("{ routing_key_part: 1 }");
        assert_eq!(
            key_of(&part, "a", "order.eu.created", &props, body).as_deref(),
            Some("eu")
        );
    }
}
