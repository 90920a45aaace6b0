//! `amqp perf`'s consumers: a connection each, `--consumer-channel-count` consuming channels
//! on it, each timing deliveries from their publish stamp and acknowledging as asked.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amqp_client::{ConsumeOptions, Consumer};
use futures_util::StreamExt;

use super::body::latency;
use super::{Run, connect};
use crate::broker::Session;
use crate::error::Result;

/// Consumer number `index`: its connection and subscriptions, made before the first publish.
pub(super) async fn subscribe(run: &Run, index: usize) -> Result<(Session, Vec<Consumer>)> {
    let session = connect(run).await?;
    let queue = run.queues.for_index(index);
    let mut consumers = Vec::new();
    for _ in 0..run.args.consumer_channel_count {
        let channel = session.channel().await?;
        channel
            .qos(run.args.prefetch, false)
            .await
            .map_err(session.failed("basic.qos"))?;
        let options = ConsumeOptions {
            no_ack: run.args.autoack,
            ..Default::default()
        };
        let consumer = channel
            .consume(queue, options)
            .await
            .map_err(session.failed(format!("consume from queue {queue:?}")))?;
        consumers.push(consumer);
    }
    Ok((session, consumers))
}

/// Runs every subscription of consumer number `index` until the run stops.
pub(super) async fn consume(
    run: Arc<Run>,
    index: usize,
    session: Session,
    consumers: Vec<Consumer>,
) -> Result<()> {
    let queue = run.queues.for_index(index);
    let loops = consumers
        .into_iter()
        .map(|consumer| consume_loop(&run, &session, queue, consumer));
    let result = futures_util::future::try_join_all(loops).await;
    session.close().await;
    result.map(drop)
}

async fn consume_loop(
    run: &Run,
    session: &Session,
    queue: &str,
    mut consumer: Consumer,
) -> Result<()> {
    let mut stop = run.stop.clone();
    let mut unacked = 0u32;
    let stamp_in_header = run.args.stamp_in_header();
    while !run.stopped() {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = stop.changed() => break,
        };
        let Some(delivery) = next else { break };
        let delivery = match delivery {
            Ok(d) => d,
            Err(_) if run.stopped() => break,
            Err(e) => return Err(session.failed(format!("consume from queue {queue:?}"))(e)),
        };
        if let Some(l) = latency(&delivery, run.epoch, stamp_in_header) {
            run.stats.record_end_to_end(l);
        }
        run.stats.consumed.fetch_add(1, Ordering::Relaxed);
        if run.args.autoack {
            continue;
        }
        unacked += 1;
        if unacked >= run.args.multi_ack {
            let acked = if unacked > 1 {
                delivery.ack_multiple().await
            } else {
                delivery.ack().await
            };
            acked.map_err(session.failed(format!("ack deliveries from queue {queue:?}")))?;
            unacked = 0;
        }
    }
    let _ = consumer.cancel().await;
    Ok(())
}
