//! The scenarios through `amqp-client`, driven as its README shows: `publish(..).await`
//! hands the message to the connection's task and returns its `Confirm` at once (the
//! connection bounds unconfirmed publishes by its `confirm_window`, 1,000 by default);
//! consumers are `Stream`s; `Delivery::ack` / `ack_multiple`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, Channel, Confirm, Confirmation, ConnectionConfig, ConsumeOptions,
    PublishOptions, QueueDeclareOptions, ShortStr,
};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::BoxError;
use crate::measure::{Meter, latency_histogram, record, with_percentiles};
use crate::scenario::{ACK_EVERY, CONFIRM_WINDOW, Job, Outcome, PREFETCH, RPC_IN_FLIGHT, Scenario};

pub(crate) async fn run(job: &Job, meter: &mut Meter) -> Result<Outcome, BoxError> {
    let mut config = ConnectionConfig::from_uri(&job.url)?;
    config.confirm_window = CONFIRM_WINDOW;
    let conn = amqp_client::Connection::connect_with(config).await?;
    let channel = conn.open_channel().await?;
    let body = Bytes::from(vec![b'x'; job.body_size]);
    let outcome = match job.scenario {
        Scenario::Publish => publish(job, &channel, body, meter).await?,
        Scenario::Confirm | Scenario::Confirm4k | Scenario::Confirm1m | Scenario::BlastPublish => {
            confirm(job, &channel, body, meter).await?
        }
        Scenario::Consume | Scenario::ConsumeMulti | Scenario::BlastConsume => {
            consume(job, &channel, meter).await?
        }
        Scenario::Rpc | Scenario::Rpc64 => {
            let server = conn.open_channel().await?;
            rpc(job, &channel, &server, body, meter).await?
        }
    };
    // Outside the timed phase: a failed goodbye does not void the figures.
    if let Err(e) = conn.close().await {
        eprintln!("warning: closing the connection: {e}");
    }
    Ok(outcome)
}

async fn publish(
    job: &Job,
    channel: &Channel,
    body: Bytes,
    meter: &mut Meter,
) -> Result<Outcome, BoxError> {
    meter.start();
    for _ in 0..job.count {
        // Without confirm mode the `Confirm` resolves to `NotRequested`: nothing to wait for.
        drop(
            channel
                .publish(
                    "",
                    &job.queue,
                    PublishOptions::default(),
                    BasicProperties::default(),
                    body.clone(),
                )
                .await?,
        );
    }
    wait_for_depth(channel, &job.queue, job.count).await?;
    Ok(meter.stop(job.count))
}

/// Polls the queue's depth (a passive declare) until it holds `count` messages.
async fn wait_for_depth(channel: &Channel, queue: &str, count: u64) -> Result<(), BoxError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    while u64::from(
        channel
            .queue_declare(queue, passive.clone())
            .await?
            .message_count,
    ) < count
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn confirm(
    job: &Job,
    channel: &Channel,
    body: Bytes,
    meter: &mut Meter,
) -> Result<Outcome, BoxError> {
    channel.confirm_select().await?;
    let routing_key = if job.queue.is_empty() {
        "blast"
    } else {
        &job.queue
    };
    meter.start();
    let mut pending: VecDeque<Confirm> = VecDeque::with_capacity(CONFIRM_WINDOW + 1);
    for _ in 0..job.count {
        let confirm = channel
            .publish(
                "",
                routing_key,
                PublishOptions::default(),
                BasicProperties::default(),
                body.clone(),
            )
            .await?;
        pending.push_back(confirm);
        if pending.len() > CONFIRM_WINDOW {
            settle(pending.pop_front()).await?;
        }
    }
    while !pending.is_empty() {
        settle(pending.pop_front()).await?;
    }
    Ok(meter.stop(job.count))
}

async fn settle(confirm: Option<Confirm>) -> Result<(), BoxError> {
    match confirm {
        Some(confirm) => match confirm.await? {
            Confirmation::Ack => Ok(()),
            other => Err(format!("publish not acked: {other:?}").into()),
        },
        None => Ok(()),
    }
}

async fn consume(job: &Job, channel: &Channel, meter: &mut Meter) -> Result<Outcome, BoxError> {
    channel.qos(PREFETCH, false).await?;
    let queue = if job.queue.is_empty() {
        "blast"
    } else {
        &job.queue
    };
    let multiple = job.scenario == Scenario::ConsumeMulti;
    meter.start();
    let mut consumer = channel.consume(queue, ConsumeOptions::default()).await?;
    let mut received = 0;
    while received < job.count {
        let Some(delivery) = consumer.next().await else {
            return Err("the consumer ended early".into());
        };
        let delivery = delivery?;
        received += 1;
        if !multiple {
            delivery.ack().await?;
        } else if received % ACK_EVERY == 0 || received == job.count {
            delivery.ack_multiple().await?;
        }
    }
    let outcome = meter.stop(received);
    consumer.cancel().await?;
    Ok(outcome)
}

async fn rpc(
    job: &Job,
    client: &Channel,
    server: &Channel,
    body: Bytes,
    meter: &mut Meter,
) -> Result<Outcome, BoxError> {
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let requests = server.queue_declare("", exclusive.clone()).await?.name;
    let replies = client.queue_declare("", exclusive).await?.name;
    let no_ack = || ConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let requests = requests.to_str().map_err(|_| "queue name")?.to_owned();
    let mut incoming = server.consume(&requests, no_ack()).await?;
    let responder = server.clone();
    let serve = tokio::spawn(async move {
        while let Some(Ok(request)) = incoming.next().await {
            let Some(reply_to) = request.properties.reply_to.as_ref() else {
                continue;
            };
            let Ok(reply_to) = reply_to.to_str() else {
                continue;
            };
            let properties = BasicProperties {
                correlation_id: request.properties.correlation_id.clone(),
                ..Default::default()
            };
            let sent = responder
                .publish(
                    "",
                    reply_to,
                    PublishOptions::default(),
                    properties,
                    request.body.clone(),
                )
                .await;
            if sent.is_err() {
                break;
            }
        }
    });
    let mut answers = client.consume(replies.to_str()?, no_ack()).await?;
    let in_flight = if job.scenario == Scenario::Rpc64 {
        RPC_IN_FLIGHT
    } else {
        1
    };
    let mut histogram = latency_histogram();
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    let request = |id: u64| BasicProperties {
        reply_to: Some(replies.clone()),
        correlation_id: Some(ShortStr::try_from(id.to_string().as_str()).expect("short")),
        ..Default::default()
    };
    meter.start();
    let (mut sent, mut answered) = (0u64, 0u64);
    while answered < job.count {
        while sent < job.count && sent_at.len() < in_flight {
            sent_at.push_back(Instant::now());
            drop(
                client
                    .publish(
                        "",
                        &requests,
                        PublishOptions::default(),
                        request(sent),
                        body.clone(),
                    )
                    .await?,
            );
            sent += 1;
        }
        let Some(answer) = answers.next().await else {
            return Err("the reply consumer ended early".into());
        };
        answer?;
        answered += 1;
        // Replies come back in order: one queue, one responder.
        if let Some(at) = sent_at.pop_front() {
            record(&mut histogram, at.elapsed());
        }
    }
    let outcome = with_percentiles(meter.stop(answered), &histogram);
    serve.abort();
    Ok(outcome)
}
