//! The RPC client: requests out, replies matched by correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use amqp_client::{
    Channel, Connection, ConnectionEvent, ConsumeOptions, Consumer, Delivery, QueueDeclareOptions,
    ShortStr,
};
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use super::{ERROR_HEADER, RpcError};
use crate::codec::Codec;
use crate::common::{content_type, header_str, message_properties, prefixed, publish_confirmed};

/// RabbitMQ's pseudo-queue for direct reply-to.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Where replies come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyQueue {
    /// RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no queue is declared.
    #[default]
    DirectReplyTo,
    /// An exclusive, auto-delete, server-named queue of this client.
    Exclusive,
}

/// Options of [`RpcClient::new`].
#[derive(Clone, Debug)]
pub struct RpcClientOptions {
    /// Put before the queue names given to [`RpcClient::call`].
    pub prefix: String,
    /// Where replies come back.
    pub reply_queue: ReplyQueue,
    /// How long a call waits for its reply; also the request's `expiration`, so a request no
    /// server took in time is dropped by the broker. Default 30 s.
    pub timeout: Duration,
}

impl Default for RpcClientOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            reply_queue: ReplyQueue::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The calls waiting for a reply, by correlation id.
type Pending = Mutex<HashMap<String, oneshot::Sender<Delivery>>>;

/// What the client and its reply task share.
#[derive(Debug)]
struct Shared {
    pending: Pending,
    /// The queue replies come to (renamed when recovery declares an exclusive one again).
    reply_to: Mutex<String>,
    /// Set when the reply consumer ends: later calls fail at once.
    ended: OnceLock<String>,
}

/// An RPC client. Cheap to clone; every clone shares one channel, and any number of calls
/// may be in flight at once.
#[derive(Debug)]
pub struct RpcClient<Req: Codec, Resp: Codec> {
    channel: Channel,
    shared: Arc<Shared>,
    ids: Arc<(String, AtomicU64)>,
    request_codec: Req,
    response_codec: Resp,
    options: RpcClientOptions,
    reply_task: Arc<AbortOnDrop>,
}

impl<Req: Codec, Resp: Codec> Clone for RpcClient<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            channel: self.channel.clone(),
            shared: self.shared.clone(),
            ids: self.ids.clone(),
            request_codec: self.request_codec.clone(),
            response_codec: self.response_codec.clone(),
            options: self.options.clone(),
            reply_task: self.reply_task.clone(),
        }
    }
}

/// Stops the reply task when the last clone of the client goes.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forgets a call's correlation id however the call ends (reply, timeout, cancellation).
struct Forget<'a> {
    pending: &'a Pending,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(self.id);
        }
    }
}

impl<Req: Codec, Resp: Codec> RpcClient<Req, Resp> {
    /// Opens a channel, starts consuming replies (see the module docs) and puts the channel in
    /// confirm mode.
    ///
    /// # Errors
    /// When the channel cannot be opened or the reply consumer is refused.
    pub async fn new(
        conn: &Connection,
        request_codec: Req,
        response_codec: Resp,
        options: RpcClientOptions,
    ) -> Result<Self, RpcError> {
        let channel = conn.open_channel().await?;
        let reply_to = match options.reply_queue {
            ReplyQueue::DirectReplyTo => DIRECT_REPLY_TO.to_owned(),
            ReplyQueue::Exclusive => {
                let declare = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                };
                channel.queue_declare("", declare).await?.name.to_string()
            }
        };
        let no_ack = ConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consumer = channel.consume(&reply_to, no_ack).await?;
        channel.confirm_select().await?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            reply_to: Mutex::new(reply_to),
            ended: OnceLock::new(),
        });
        let task = tokio::spawn(route_replies(consumer, conn.events(), shared.clone()));
        Ok(Self {
            channel,
            shared,
            ids: Arc::new((correlation_prefix(), AtomicU64::new(0))),
            request_codec,
            response_codec,
            options,
            reply_task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// Calls the server consuming queue `prefix` + `queue` (through the default exchange),
    /// with the client's timeout.
    ///
    /// # Errors
    /// [`RpcError::Unroutable`] when no such queue exists, [`RpcError::Timeout`] when no reply
    /// came in time, [`RpcError::Remote`] when the server failed, [`RpcError::Codec`] when the
    /// request or the reply cannot be encoded or decoded.
    pub async fn call(&self, queue: &str, request: &Req::Item) -> Result<Resp::Item, RpcError> {
        let routing_key = prefixed(&self.options.prefix, queue);
        self.call_with("", &routing_key, request, self.options.timeout)
            .await
    }

    /// Calls through any exchange and routing key, with its own timeout.
    ///
    /// # Errors
    /// As [`RpcClient::call`].
    pub async fn call_with(
        &self,
        exchange: &str,
        routing_key: &str,
        request: &Req::Item,
        timeout: Duration,
    ) -> Result<Resp::Item, RpcError> {
        if let Some(reason) = self.shared.ended.get() {
            return Err(RpcError::ReplyConsumerEnded(reason.clone()));
        }
        let body = self.request_codec.encode(request)?;
        let id = format!(
            "{}{}",
            self.ids.0,
            self.ids.1.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id.clone(), tx);
        let _forget = Forget {
            pending: &self.shared.pending,
            id: &id,
        };
        let mut props = message_properties(self.request_codec.content_type(), false);
        props.correlation_id = ShortStr::try_from(id.as_str()).ok();
        props.reply_to = ShortStr::try_from(lock(&self.shared.reply_to).as_str()).ok();
        props.expiration = ShortStr::try_from(timeout.as_millis().max(1).to_string()).ok();
        let exchange_call = async {
            publish_confirmed(&self.channel, exchange, routing_key, true, props, body).await?;
            rx.await.map_err(|_| {
                let reason = self.shared.ended.get().cloned().unwrap_or_default();
                RpcError::ReplyConsumerEnded(reason)
            })
        };
        let reply = tokio::time::timeout(timeout, exchange_call)
            .await
            .map_err(|_| RpcError::Timeout(timeout))??;
        if let Some(error) = header_str(&reply.properties, ERROR_HEADER) {
            return Err(RpcError::Remote(error.to_owned()));
        }
        let content_type = content_type(&reply.properties);
        Ok(self
            .response_codec
            .decode(content_type, reply.body.clone())?)
    }

    /// Calls waiting for their reply right now.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.pending).len()
    }

    /// Closes the client's channel; calls in flight fail.
    ///
    /// # Errors
    /// When the channel had failed.
    pub async fn close(self) -> Result<(), RpcError> {
        Ok(self.channel.close().await?)
    }
}

/// A poisoned lock only means another call panicked while holding it; the map is still sound.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Correlation ids unique to this client: process id, a per-process counter, the time.
fn correlation_prefix() -> String {
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}.{}.{nanos}.",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Hands each reply to the call waiting for it; drops replies nobody waits for any more.
async fn route_replies(
    mut consumer: Consumer,
    mut events: broadcast::Receiver<ConnectionEvent>,
    shared: Arc<Shared>,
) {
    let mut listening = true;
    let reason = loop {
        tokio::select! {
            reply = consumer.next() => match reply {
                Some(Ok(reply)) => deliver(&shared, reply),
                Some(Err(e)) => break e.to_string(),
                None => break "consumer cancelled".to_owned(),
            },
            event = events.recv(), if listening => match event {
                Ok(ConnectionEvent::QueueRenamed { old, new }) => {
                    let mut reply_to = lock(&shared.reply_to);
                    if old == reply_to.as_str() {
                        *reply_to = new.to_string();
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => listening = false,
            },
        }
    };
    tracing::warn!(%reason, "rpc reply consumer ended; calls in flight fail");
    let _ = shared.ended.set(reason);
    lock(&shared.pending).clear();
}

fn deliver(shared: &Shared, reply: Delivery) {
    let id = reply
        .properties
        .correlation_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    match lock(&shared.pending).remove(id) {
        Some(call) => {
            // The call may have timed out in between: nothing to do then.
            let _ = call.send(reply);
        }
        None => tracing::debug!(
            correlation_id = id,
            "reply for no waiting call (late or foreign)"
        ),
    }
}
