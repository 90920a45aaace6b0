//! `amqp perf`'s producers: a connection each, `--producer-channel-count` publishing channels
//! on it, each paced by `--rate` / `--variable-rate` and counting its confirms.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amqp_client::{Channel, Confirm, Confirmation, PublishOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::schedule::Pacer;
use super::{Run, connect};
use crate::broker::Session;
use crate::error::{CliError, Result};

/// Producer number `index`: its connection and channels, until the run stops or each channel
/// has published `--pmessages`.
pub(super) async fn produce(run: Arc<Run>, index: usize) -> Result<()> {
    let session = connect(&run).await?;
    let queue = run.queues.for_index(index).to_owned();
    let mut channels = Vec::new();
    for _ in 0..run.args.producer_channel_count {
        channels.push(session.channel().await?);
    }
    let loops = channels
        .into_iter()
        .map(|channel| publish_loop(&run, &session, channel, &queue));
    let result = futures_util::future::try_join_all(loops).await;
    session.close().await;
    result.map(drop)
}

async fn publish_loop(
    run: &Arc<Run>,
    session: &Session,
    channel: Channel,
    queue: &str,
) -> Result<()> {
    let confirms = run.args.confirm > 0;
    if confirms {
        channel
            .confirm_select()
            .await
            .map_err(session.failed("confirm.select"))?;
    }
    let (tx, rx) = mpsc::channel(run.args.confirm.max(1));
    let settle = tokio::spawn(settle_confirms(run.clone(), rx, session.host.clone()));
    let routing_key = run.queues.routing_key(&run.args, queue);
    let options = PublishOptions {
        mandatory: run.args.mandatory(),
    };
    let target = format!("publish to queue {queue:?}");
    let started = Instant::now();
    let mut pacer = Pacer::new(started);
    let mut stop = run.stop.clone();
    let mut sent = 0u64;
    while !run.stopped() && run.args.count.is_none_or(|c| sent < c) {
        let now = Instant::now();
        let due = pacer.next_due(&run.rates, now);
        // No timer when nothing limits the rate: one per publish would cost throughput.
        if due > now {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = stop.changed() => break,
            }
        }
        let size = run.sizes.at(started.elapsed()) as usize;
        let (body, properties) = run
            .bodies
            .message(sent, size, run.epoch.elapsed(), &run.base);
        let octets = body.len() as u64;
        let publish = channel.publish(&run.exchange, &routing_key, options, properties, body);
        let confirm = tokio::select! {
            c = publish => c.map_err(session.failed(target.clone()))?,
            _ = stop.changed() => break,
        };
        run.stats.published.fetch_add(1, Ordering::Relaxed);
        run.stats
            .published_bytes
            .fetch_add(octets, Ordering::Relaxed);
        sent += 1;
        if confirms && tx.send((Instant::now(), confirm)).await.is_err() {
            break;
        }
    }
    drop(tx);
    match settle.await {
        Ok(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Awaits each publish's confirm, in order, counting and timing them.
async fn settle_confirms(
    run: Arc<Run>,
    mut rx: mpsc::Receiver<(Instant, Confirm)>,
    host: String,
) -> Result<()> {
    let stats = &run.stats;
    while let Some((sent, confirm)) = rx.recv().await {
        let counter = match confirm.await {
            Ok(Confirmation::Ack) => &stats.confirmed,
            Ok(Confirmation::Returned(_)) => &stats.returned,
            Ok(Confirmation::Nack) => &stats.nacked,
            Ok(_) => continue,
            // The connection is closing at the end of the run: the unconfirmed rest is moot.
            Err(_) if run.stopped() => return Ok(()),
            Err(e) => {
                return Err(CliError::Broker {
                    action: "confirm a publish".to_owned(),
                    host,
                    source: e,
                });
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stats.record_confirm(sent.elapsed());
    }
    Ok(())
}
