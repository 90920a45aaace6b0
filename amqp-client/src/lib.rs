//! An async AMQP 0-9-1 client for tokio, driving the sans-IO `amqp-wire` engine.
//!
//! One task per connection owns the socket and the protocol engine; [`Connection`],
//! [`Channel`] and [`Consumer`] are cheap handles that send it commands. Everything is bounded
//! and pushes back: publishing waits while the socket is slow, while the broker blocks
//! publishers, and while a channel in confirm mode has `confirm_window` publishes unconfirmed;
//! a consumer that is not read stops the reading of the socket instead of buffering without
//! limit. Every call that waits on the broker has a timeout.
//!
//! ```no_run
//! use amqp_client::{BasicProperties, Confirmation, Connection, PublishOptions, QueueDeclareOptions};
//! use futures_util::StreamExt;
//!
//! # async fn example() -> amqp_client::Result<()> {
//! let conn = Connection::connect("amqp://guest:guest@localhost:5672/%2f").await?;
//! let channel = conn.open_channel().await?;
//! channel.queue_declare("hello", QueueDeclareOptions { durable: true, ..Default::default() }).await?;
//! channel.confirm_select().await?;
//! let confirm = channel
//!     .publish("", "hello", PublishOptions::default(), BasicProperties::default(), "world")
//!     .await?;
//! match confirm.await? {
//!     Confirmation::Ack => {}                    // the broker has it
//!     Confirmation::Nack => eprintln!("refused: publish again or give up"),
//!     Confirmation::Returned(r) => eprintln!("unroutable: {}", r.reply_text),
//!     _ => {}                                    // not in confirm mode
//! }
//!
//! let mut consumer = channel.consume("hello", Default::default()).await?;
//! if let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     assert_eq!(&delivery.body[..], b"world");
//!     delivery.ack().await?;
//! }
//! conn.close().await
//! # }
//! ```
#![forbid(unsafe_code)]

mod channel;
mod command;
mod config;
mod connection;
mod consumer;
mod driver;
mod error;
mod events;
mod options;
mod publish;
mod recovery;
mod router;
mod session;
mod tls;
mod topology;
mod uri;

pub use amqp_wire::connection::{
    CloseReason, ConnectionError, Initiator, Returned, Sasl, Tune, UsageError,
};
pub use amqp_wire::{
    BasicProperties, ChannelId, Decimal, DeliveryTag, FieldArray, FieldTable, FieldValue, LongStr,
    ReplyCode, ShortStr,
};
pub use channel::{Channel, QueueInfo};
pub use config::{
    Connecting, ConnectionBuilder, ConnectionConfig, Connector, Endpoint, Io, Recovery,
    TcpConnector, TlsOptions,
};
pub use connection::{Connection, ConnectionEvent, Events, EventsLagged};
pub use consumer::{Consumer, Delivery, GetMessage};
pub use error::{ConfigError, Error, Result};
pub use options::{
    ConsumeOptions, ExchangeDeclareOptions, ExchangeKind, PublishOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
pub use publish::{Confirm, Confirmation, Returns};
