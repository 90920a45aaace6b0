//! What happens to a message whose handler failed, through the work queue's retry and
//! dead-letter machinery: a failure is counted in `x-retry-count` on a copy of the message
//! (plus the broker's `x-delivery-count` on quorum queues, which counts the deliveries a
//! crash left unsettled), and nothing is acked before its copy is confirmed.
//!
//! ```text
//! requeue      copy to the tail of Q with x-retry-count + 1, x-last-error; ack
//! retry        copy to Q.delay.<ms> (expires back into Q); ack
//! dead_letter  copy to Q.dead with x-last-error; ack
//! ```
//!
//! Past `max_redeliveries` failures, or when the message could not be handed to the handler
//! at all, it goes to `Q.dead` whatever `on_failure` says. A message that arrives already
//! over the limit (crashes) goes there without running.

use amqp_client::{Connection, Delivery, FieldTable, QueueDeclareOptions};

use super::config::{ConsumerConfig, OnFailure};
use super::publisher::Publisher;
use crate::common::headers_mut;
use crate::work_queue::{
    QueueNames, RETRY_COUNT_HEADER, RetryPolicy, copy_properties, copy_then_ack,
    declare_delay_queues, delivery_count, retry_count,
};

/// A consumer's failure policy.
#[derive(Debug)]
pub(crate) struct FailurePolicy {
    consumer: String,
    names: QueueNames,
    max_redeliveries: u32,
    on_failure: OnFailure,
    retry: RetryPolicy,
}

impl FailurePolicy {
    pub(crate) fn new(config: &ConsumerConfig) -> Self {
        Self {
            consumer: config.name.clone(),
            names: QueueNames::new("", &config.queue),
            max_redeliveries: config.max_redeliveries,
            on_failure: config.on_failure,
            retry: RetryPolicy {
                max_retries: config.max_redeliveries,
                delays: config.retry_delays.clone(),
            },
        }
    }

    /// Declares the dead-letter queue, and the delay queues of `on_failure: retry`.
    pub(crate) async fn declare(&self, conn: &Connection) -> Result<(), amqp_client::Error> {
        let channel = conn.open_channel().await?;
        let options = QueueDeclareOptions {
            durable: true,
            arguments: FieldTable::new(),
            ..Default::default()
        };
        channel.queue_declare(&self.names.dead, options).await?;
        if self.on_failure == OnFailure::Retry {
            declare_delay_queues(&channel, &self.names, &self.retry).await?;
        }
        channel.close().await
    }

    /// Failures the message has had: ours, and the deliveries a crash left unsettled.
    fn failures(delivery: &Delivery) -> u32 {
        let props = &delivery.properties;
        retry_count(props).saturating_add(delivery_count(props))
    }

    /// Why the message must not run again, when it has failed too often already.
    pub(crate) fn exhausted(&self, delivery: &Delivery) -> Option<String> {
        let failures = Self::failures(delivery);
        (failures > self.max_redeliveries).then(|| {
            format!(
                "failed {failures} times, more than max_redeliveries ({})",
                self.max_redeliveries
            )
        })
    }

    /// Requeues, retries later or dead-letters a message whose handler failed.
    pub(crate) async fn failed(&self, delivery: &Delivery, error: &str, publisher: &Publisher) {
        let failures = Self::failures(delivery).saturating_add(1);
        if failures > self.max_redeliveries || self.on_failure == OnFailure::DeadLetter {
            return self.dead_letter(delivery, error, publisher).await;
        }
        let target = match self.on_failure {
            OnFailure::Retry if !self.retry.delay(failures).is_zero() => {
                self.names.delay(self.retry.delay(failures))
            }
            _ => self.names.queue.clone(),
        };
        let mut props = copy_properties(&delivery.properties, error);
        headers_mut(&mut props).insert(RETRY_COUNT_HEADER, i64::from(failures));
        tracing::info!(consumer = %self.consumer, failures, queue = %target, error, "handler failed; message requeued");
        self.copy(delivery, &target, props, publisher).await;
    }

    /// Sends a message to the dead-letter queue with its reason in `x-last-error`.
    pub(crate) async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        publisher: &Publisher,
    ) {
        tracing::warn!(consumer = %self.consumer, queue = %self.names.dead, reason, "dead-lettering message");
        let props = copy_properties(&delivery.properties, reason);
        self.copy(delivery, &self.names.dead, props, publisher)
            .await;
    }

    async fn copy(
        &self,
        delivery: &Delivery,
        queue: &str,
        props: amqp_client::BasicProperties,
        publisher: &Publisher,
    ) {
        let channel = match publisher.channel().await {
            Ok(channel) => channel,
            Err(e) => {
                tracing::error!(consumer = %self.consumer, error = %e, "no channel for the copy; requeueing the message");
                if let Err(e) = delivery.nack(true).await {
                    tracing::debug!(error = %e, "requeue failed; the broker requeues it when the channel closes");
                }
                return;
            }
        };
        // copy_then_ack requeues the original itself when the copy is not confirmed.
        let _ = copy_then_ack(&channel, delivery, queue, props).await;
    }
}
