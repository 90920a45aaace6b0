//! The RPC server: requests in, replies out, requests acked after their reply.

use std::sync::Arc;
use std::time::Duration;

use amqp_client::{
    BasicProperties, Channel, Connection, Consumer, Delivery, FieldTable, QueueDeclareOptions,
};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ERROR_HEADER, Envelope, RpcError};
use crate::codec::Codec;
use crate::common::{
    catch_panic, consume_concurrently, content_type, headers_mut, message_properties, prefixed,
    publish_confirmed,
};

/// Options of [`RpcServer::serve`].
#[derive(Clone, Debug)]
pub struct RpcServerOptions {
    /// Put before the request queue's name.
    pub prefix: String,
    /// Requests the broker sends ahead (`basic.qos`); raised to `concurrency` if lower.
    pub prefetch: u16,
    /// Requests handled at once.
    pub concurrency: usize,
    /// Extra arguments of the request queue (`x-dead-letter-exchange`, ...).
    pub arguments: FieldTable,
    /// Error replies carry the JSON envelope `{"success": false, "data": {}, "message":
    /// ERROR}` as their body (besides the `x-rpc-error` header), for clients promised that
    /// every reply has the [`super::Envelope`] shape.
    pub envelope_errors: bool,
    /// The longest a handler may run; past it the request is answered with an error
    /// (`handler timed out after ...`) and acked.
    pub handler_timeout: Option<Duration>,
}

impl Default for RpcServerOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            prefetch: 10,
            concurrency: 1,
            arguments: FieldTable::new(),
            envelope_errors: false,
            handler_timeout: None,
        }
    }
}

/// A request as a handler sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Request<T> {
    /// The decoded request.
    pub payload: T,
    /// The request's properties (`reply_to`, `correlation_id`, headers, ...).
    pub properties: BasicProperties,
}

/// A running RPC server. Dropping it stops it as [`RpcServer::shutdown`] does, in the
/// background.
#[derive(Debug)]
pub struct RpcServer {
    queue: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RpcError>>,
}

/// What each request task needs.
struct Responder<Req, Resp> {
    channel: Channel,
    request_codec: Req,
    response_codec: Resp,
    envelope_errors: bool,
    handler_timeout: Option<Duration>,
}

impl RpcServer {
    /// Declares the durable queue `prefix` + `queue` and serves it with `handler`: each
    /// request's reply goes to its `reply_to` with its `correlation_id`, and the request is
    /// acked once the broker confirmed the reply.
    ///
    /// # Errors
    /// When the queue cannot be declared or consumed.
    pub async fn serve<Req, Resp, H, F, E>(
        conn: &Connection,
        queue: &str,
        request_codec: Req,
        response_codec: Resp,
        options: RpcServerOptions,
        handler: H,
    ) -> Result<Self, RpcError>
    where
        Req: Codec,
        Resp: Codec,
        H: Fn(Request<Req::Item>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Resp::Item, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let queue = prefixed(&options.prefix, queue);
        let channel = conn.open_channel().await?;
        let declare = QueueDeclareOptions {
            durable: true,
            arguments: options.arguments.clone(),
            ..Default::default()
        };
        channel.queue_declare(&queue, declare).await?;
        let concurrency = options.concurrency.max(1);
        let prefetch = options
            .prefetch
            .max(u16::try_from(concurrency).unwrap_or(u16::MAX));
        channel.qos(prefetch, false).await?;
        channel.confirm_select().await?;
        let consumer = channel.consume(&queue, Default::default()).await?;
        let responder = Arc::new(Responder {
            channel,
            request_codec,
            response_codec,
            envelope_errors: options.envelope_errors,
            handler_timeout: options.handler_timeout,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            consumer,
            responder,
            Arc::new(handler),
            concurrency,
            stopped,
        ));
        Ok(Self { queue, stop, task })
    }

    /// The request queue's full name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Stops consuming, hands prefetched requests back, lets running handlers reply, and
    /// closes the channel. The queue stays.
    ///
    /// # Errors
    /// The error that stopped the server earlier, if one did.
    pub async fn shutdown(self) -> Result<(), RpcError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(RpcError::Server(e.to_string())),
        }
    }
}

async fn run<Req, Resp, H, F, E>(
    consumer: Consumer,
    responder: Arc<Responder<Req, Resp>>,
    handler: Arc<H>,
    concurrency: usize,
    stop: watch::Receiver<bool>,
) -> Result<(), RpcError>
where
    Req: Codec,
    Resp: Codec,
    H: Fn(Request<Req::Item>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Resp::Item, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    consume_concurrently(consumer, &responder.channel, concurrency, stop, |request| {
        let (responder, handler) = (responder.clone(), handler.clone());
        async move { responder.answer(request, &*handler).await }
    })
    .await
    .map_err(Into::into)
}

impl<Req: Codec, Resp: Codec> Responder<Req, Resp> {
    async fn answer<H, F, E>(&self, request: Delivery, handler: &H)
    where
        H: Fn(Request<Req::Item>) -> F,
        F: Future<Output = Result<Resp::Item, E>>,
        E: std::fmt::Display,
    {
        let decoded = self
            .request_codec
            .decode(content_type(&request.properties), request.body.clone());
        let payload = match decoded {
            Ok(payload) => payload,
            Err(e) => {
                let error = format!("unreadable request: {e}");
                tracing::warn!(%error, "rejecting an rpc request");
                if self.reply(&request, Err(error)).await.is_ok() {
                    log_settle(request.reject(false).await);
                }
                return;
            }
        };
        let call = Request {
            payload,
            properties: request.properties.clone(),
        };
        let outcome = match self.run(handler(call)).await {
            Ok(Ok(response)) => self
                .response_codec
                .encode(&response)
                .map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic_or_timeout) => Err(panic_or_timeout),
        };
        match self.reply(&request, outcome).await {
            Ok(()) => log_settle(request.ack().await),
            Err(e) => {
                tracing::error!(error = %e, "rpc reply not confirmed; requeueing the request");
                log_settle(request.nack(true).await);
            }
        }
    }

    /// Runs a handler, catching its panic and cutting it off at the handler timeout.
    async fn run<T>(&self, work: impl Future<Output = T>) -> Result<T, String> {
        let Some(limit) = self.handler_timeout else {
            return catch_panic(work).await;
        };
        tokio::time::timeout(limit, catch_panic(work))
            .await
            .unwrap_or_else(|_| Err(format!("handler timed out after {limit:?}")))
    }

    /// Publishes the reply (a response body, or an error) and waits for its confirm. A
    /// request without `reply_to` gets no reply.
    async fn reply(
        &self,
        request: &Delivery,
        outcome: Result<Bytes, String>,
    ) -> Result<(), RpcError> {
        let Some(reply_to) = request
            .properties
            .reply_to
            .as_ref()
            .and_then(|r| r.to_str().ok())
        else {
            tracing::debug!("rpc request without reply_to: no reply");
            return Ok(());
        };
        let mut props = message_properties(self.response_codec.content_type(), false);
        props.correlation_id = request.properties.correlation_id.clone();
        let body = match outcome {
            Ok(body) => body,
            Err(error) => {
                headers_mut(&mut props).insert(ERROR_HEADER, error.as_str());
                self.error_body(&mut props, error)
            }
        };
        publish_confirmed(&self.channel, "", reply_to, false, props, body).await?;
        Ok(())
    }
}

impl<Req, Resp> Responder<Req, Resp> {
    /// An error reply's body: empty, or the failure envelope.
    fn error_body(&self, props: &mut BasicProperties, error: String) -> Bytes {
        if !self.envelope_errors {
            return Bytes::new();
        }
        props.content_type = Some(amqp_client::ShortStr::from_static("application/json"));
        // An envelope of strings and an empty map always serialises.
        serde_json::to_vec(&Envelope::<serde_json::Value>::error(error))
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

fn log_settle(result: amqp_client::Result<()>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not settle an rpc request; the broker redelivers it");
    }
}
