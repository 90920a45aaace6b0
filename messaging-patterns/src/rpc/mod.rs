//! RPC (request-response): a client that sends requests and waits for their replies, and a
//! server that answers them.
//!
//! # Wire sequence
//!
//! ```text
//! client:  basic.consume amq.rabbitmq.reply-to no-ack          (direct reply-to, the default)
//!          or queue.declare "" exclusive auto-delete; basic.consume it no-ack
//!          confirm.select
//!   call   basic.publish "" P+queue mandatory, reply_to, correlation_id = fresh id,
//!          expiration = the call's timeout; wait basic.ack
//!          (basic.return → RpcError::Unroutable); wait the basic.deliver whose
//!          correlation_id matches (or RpcError::Timeout, and the id is forgotten)
//! server:  queue.declare P+queue durable; basic.qos; confirm.select; basic.consume
//!   request  basic.deliver → handler → basic.publish "" reply_to with its correlation_id;
//!          wait basic.ack; then basic.ack the request (requeued if the reply was refused)
//! ```
//!
//! A handler's error is sent back as a reply with the header `x-rpc-error` (the client's
//! [`RpcError::Remote`]); a request the server's codec cannot read is answered the same way
//! and rejected without requeue (dead-lettered if the queue has a dead-letter exchange).
//! The reply's body is empty, or, with [`RpcServerOptions::envelope_errors`], the JSON
//! envelope `{"success": false, "data": {}, "message": ERROR}`: services whose clients are
//! promised that every reply has the [`Envelope`] shape use it with `Envelope` as their
//! response type, and then a handler error, a panic, an unreadable request and a handler
//! past [`RpcServerOptions::handler_timeout`] all answer in that shape.
//!
//! # Example
//!
//! ```no_run
//! use messaging_patterns::codec::Json;
//! use messaging_patterns::rpc::{RpcClient, RpcClientOptions, RpcServer, RpcServerOptions};
//!
//! # async fn example(conn: amqp_client::Connection) -> Result<(), messaging_patterns::rpc::RpcError> {
//! let server = RpcServer::serve(
//!     &conn, "add", Json::<(i64, i64)>::new(), Json::<i64>::new(), RpcServerOptions::default(),
//!     |request| async move { Ok::<_, String>(request.payload.0 + request.payload.1) },
//! ).await?;
//! let client = RpcClient::new(&conn, Json::new(), Json::<i64>::new(), RpcClientOptions::default()).await?;
//! assert_eq!(client.call("add", &(2, 3)).await?, 5);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

mod client;
mod envelope;
mod server;

use std::time::Duration;

use crate::codec::CodecError;
use crate::common::PublishFailure;

pub use client::{ReplyQueue, RpcClient, RpcClientOptions};
pub use envelope::Envelope;
pub use server::{Request, RpcServer, RpcServerOptions};

/// The header of a reply that carries the server's error instead of a response.
pub const ERROR_HEADER: &str = "x-rpc-error";

/// What can go wrong with a call or a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The client failed: channel or connection gone, a declare refused.
    #[error(transparent)]
    Client(#[from] amqp_client::Error),
    /// The request could not be encoded, or the reply decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// No reply within the call's timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// No queue is bound for the request's routing key: nobody serves it.
    #[error(
        "request unroutable: no queue for routing key {routing_key:?} on exchange {exchange:?}"
    )]
    Unroutable {
        /// The exchange the request was published to ("" is the default exchange).
        exchange: String,
        /// The routing key (the queue name, with the default exchange).
        routing_key: String,
    },
    /// The broker refused the request or the reply (`basic.nack`).
    #[error("the broker refused the message (basic.nack)")]
    Nacked,
    /// The server answered with an error.
    #[error("the server failed: {0}")]
    Remote(String),
    /// The client's reply consumer ended (its channel closed): no reply can arrive.
    #[error("the reply consumer ended: {0}")]
    ReplyConsumerEnded(String),
    /// A server task ended abnormally.
    #[error("server task failed: {0}")]
    Server(String),
}

impl From<PublishFailure> for RpcError {
    fn from(e: PublishFailure) -> Self {
        match e {
            PublishFailure::Client(e) => Self::Client(e),
            PublishFailure::Nacked => Self::Nacked,
            PublishFailure::Unroutable {
                exchange,
                routing_key,
            } => Self::Unroutable {
                exchange,
                routing_key,
            },
        }
    }
}
