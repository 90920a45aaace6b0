//! `amqp declare`, `amqp delete` and `amqp purge`: exchanges, queues and bindings.

use amqp_client::{
    Channel, ExchangeDeclareOptions, ExchangeKind, FieldTable, FieldValue, QueueDeclareOptions,
    QueueDeleteOptions,
};
use clap::{Args, Subcommand, ValueEnum};

use crate::broker::Session;
use crate::error::{Result, say};
use crate::headers::{self, Header};

fn parse_arg(s: &str) -> std::result::Result<Header, headers::HeaderError> {
    headers::parse_header(s)
}

/// `amqp declare ...`
#[derive(Subcommand, Clone, Debug)]
pub enum DeclareCommand {
    /// Declare an exchange
    Exchange(ExchangeArgs),
    /// Declare a queue
    Queue(QueueArgs),
    /// Bind a queue (or an exchange) to an exchange
    Binding(BindingArgs),
}

/// `amqp delete ...`
#[derive(Subcommand, Clone, Debug)]
pub enum DeleteCommand {
    /// Delete an exchange
    Exchange(DeleteExchangeArgs),
    /// Delete a queue and its messages
    Queue(DeleteQueueArgs),
    /// Remove a binding
    Binding(BindingArgs),
}

/// `amqp declare exchange`
#[derive(Args, Clone, Debug)]
pub struct ExchangeArgs {
    /// The exchange's name
    pub name: String,
    /// direct, fanout, topic, headers, or a plugin's type such as x-delayed-message
    #[arg(
        short = 't',
        long = "type",
        default_value = "direct",
        value_name = "TYPE"
    )]
    pub kind: String,
    /// Not durable: gone after a broker restart (durable is the default)
    #[arg(long)]
    pub transient: bool,
    /// Deleted when its last binding goes
    #[arg(long)]
    pub auto_delete: bool,
    /// Only reachable through exchange-to-exchange bindings
    #[arg(long)]
    pub internal: bool,
    /// Only check that it exists
    #[arg(long)]
    pub passive: bool,
    /// An argument such as alternate-exchange=ae, typed as --header is
    #[arg(long = "arg", value_name = "KEY[:TYPE]=VALUE", value_parser = parse_arg)]
    pub arguments: Vec<Header>,
}

/// A queue's type (`x-queue-type`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    /// RabbitMQ's classic queue
    Classic,
    /// A replicated Raft queue (always durable)
    Quorum,
    /// An append-only log (always durable)
    Stream,
}

impl QueueType {
    /// The `x-queue-type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
            Self::Stream => "stream",
        }
    }
}

/// `amqp declare queue`
#[derive(Args, Clone, Debug)]
pub struct QueueArgs {
    /// The queue's name
    pub name: String,
    /// The queue type (x-queue-type); the broker's default when not given
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub kind: Option<QueueType>,
    /// Not durable: gone after a broker restart (durable is the default; RabbitMQ 4
    /// refuses transient queues that are not exclusive unless configured to allow them)
    #[arg(long)]
    pub transient: bool,
    /// Deleted when its last consumer goes
    #[arg(long)]
    pub auto_delete: bool,
    /// Only check that it exists, and print its counts
    #[arg(long)]
    pub passive: bool,
    /// An argument such as x-message-ttl:int=60000, typed as --header is
    #[arg(long = "arg", value_name = "KEY[:TYPE]=VALUE", value_parser = parse_arg)]
    pub arguments: Vec<Header>,
}

/// Whether a binding's destination is a queue or an exchange.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DestinationType {
    /// queue.bind
    #[default]
    Queue,
    /// exchange.bind
    Exchange,
}

/// `amqp declare binding` / `amqp delete binding`
#[derive(Args, Clone, Debug)]
pub struct BindingArgs {
    /// The exchange messages come from
    #[arg(short, long, value_name = "EXCHANGE")]
    pub source: String,
    /// The queue (or exchange) they go to
    #[arg(short, long, value_name = "NAME")]
    pub destination: String,
    /// Whether the destination is a queue or an exchange
    #[arg(long, value_enum, default_value_t)]
    pub destination_type: DestinationType,
    /// The binding key
    #[arg(short = 'k', long, default_value = "", value_name = "KEY")]
    pub routing_key: String,
    /// A binding argument such as x-match=all, typed as --header is
    #[arg(long = "arg", value_name = "KEY[:TYPE]=VALUE", value_parser = parse_arg)]
    pub arguments: Vec<Header>,
}

/// `amqp delete exchange`
#[derive(Args, Clone, Debug)]
pub struct DeleteExchangeArgs {
    /// The exchange's name
    pub name: String,
    /// Only if it has no bindings
    #[arg(long)]
    pub if_unused: bool,
}

/// `amqp delete queue`
#[derive(Args, Clone, Debug)]
pub struct DeleteQueueArgs {
    /// The queue's name
    pub name: String,
    /// Only if it has no consumers
    #[arg(long)]
    pub if_unused: bool,
    /// Only if it has no messages
    #[arg(long)]
    pub if_empty: bool,
}

/// `amqp purge`
#[derive(Args, Clone, Debug)]
pub struct PurgeArgs {
    /// The queue to empty of its ready messages
    #[arg(short, long, value_name = "QUEUE")]
    pub queue: String,
}

fn arguments(args: &[Header]) -> FieldTable {
    headers::table(args).unwrap_or_default()
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

fn durability(transient: bool) -> &'static str {
    if transient { "transient" } else { "durable" }
}

/// Runs `amqp declare ...`, printing what was declared.
///
/// # Errors
/// Connection and broker errors, naming the exchange or queue and the reply code (406 when it
/// exists with other properties, 404 for a passive declare of a missing one).
pub async fn declare(url: &str, command: DeclareCommand) -> Result<()> {
    let session = Session::open(url).await?;
    let result = declare_on(&session, &command).await;
    session.close().await;
    result
}

async fn declare_on(session: &Session, command: &DeclareCommand) -> Result<()> {
    let channel = session.channel().await?;
    match command {
        DeclareCommand::Exchange(a) => {
            let options = ExchangeDeclareOptions {
                passive: a.passive,
                durable: !a.transient,
                auto_delete: a.auto_delete,
                internal: a.internal,
                arguments: arguments(&a.arguments),
            };
            channel
                .exchange_declare(&a.name, exchange_kind(&a.kind), options)
                .await
                .map_err(session.failed(format!("declare exchange {:?}", a.name)))?;
            say(format_args!(
                "exchange {:?}: {}, {}",
                a.name,
                a.kind,
                durability(a.transient)
            ))?;
        }
        DeclareCommand::Queue(a) => {
            let mut arguments = arguments(&a.arguments);
            if let Some(kind) = a.kind {
                arguments.insert("x-queue-type", FieldValue::from(kind.as_str()));
            }
            let options = QueueDeclareOptions {
                passive: a.passive,
                durable: !a.transient,
                exclusive: false,
                auto_delete: a.auto_delete,
                arguments,
            };
            let info = channel
                .queue_declare(&a.name, options)
                .await
                .map_err(session.failed(format!("declare queue {:?}", a.name)))?;
            say(format_args!(
                "queue {:?}: {} messages, {} consumers",
                info.name.to_string(),
                info.message_count,
                info.consumer_count
            ))?;
        }
        DeclareCommand::Binding(a) => {
            bind(session, &channel, a, true).await?;
            say(binding_text(a, "bound", "to"))?;
        }
    }
    Ok(())
}

fn binding_text(a: &BindingArgs, verb: &str, preposition: &str) -> String {
    let kind = match a.destination_type {
        DestinationType::Queue => "queue",
        DestinationType::Exchange => "exchange",
    };
    format!(
        "{verb} {kind} {:?} {preposition} exchange {:?} with routing key {:?}",
        a.destination, a.source, a.routing_key
    )
}

async fn bind(session: &Session, channel: &Channel, a: &BindingArgs, bind: bool) -> Result<()> {
    let args = arguments(&a.arguments);
    let (d, s, k) = (&a.destination, &a.source, &a.routing_key);
    let done = match (a.destination_type, bind) {
        (DestinationType::Queue, true) => channel.queue_bind(d, s, k, args).await,
        (DestinationType::Queue, false) => channel.queue_unbind(d, s, k, args).await,
        (DestinationType::Exchange, true) => channel.exchange_bind(d, s, k, args).await,
        (DestinationType::Exchange, false) => channel.exchange_unbind(d, s, k, args).await,
    };
    let verb = if bind { "bind" } else { "unbind" };
    let preposition = if bind { "to" } else { "from" };
    done.map_err(session.failed(format!("{verb} {d:?} {preposition} exchange {s:?}")))
}

/// Runs `amqp delete ...`.
///
/// # Errors
/// Connection and broker errors (406 when `--if-unused` / `--if-empty` do not hold).
pub async fn delete(url: &str, command: DeleteCommand) -> Result<()> {
    let session = Session::open(url).await?;
    let result = delete_on(&session, &command).await;
    session.close().await;
    result
}

async fn delete_on(session: &Session, command: &DeleteCommand) -> Result<()> {
    let channel = session.channel().await?;
    match command {
        DeleteCommand::Exchange(a) => {
            channel
                .exchange_delete(&a.name, a.if_unused)
                .await
                .map_err(session.failed(format!("delete exchange {:?}", a.name)))?;
            say(format_args!("deleted exchange {:?}", a.name))?;
        }
        DeleteCommand::Queue(a) => {
            let options = QueueDeleteOptions {
                if_unused: a.if_unused,
                if_empty: a.if_empty,
            };
            let count = channel
                .queue_delete(&a.name, options)
                .await
                .map_err(session.failed(format!("delete queue {:?}", a.name)))?;
            say(format_args!(
                "deleted queue {:?} with {count} messages",
                a.name
            ))?;
        }
        DeleteCommand::Binding(a) => {
            bind(session, &channel, a, false).await?;
            say(binding_text(a, "unbound", "from"))?;
        }
    }
    Ok(())
}

/// Runs `amqp purge`.
///
/// # Errors
/// Connection and broker errors (404 naming the queue when it does not exist).
pub async fn purge(url: &str, args: PurgeArgs) -> Result<()> {
    let session = Session::open(url).await?;
    let result = purge_on(&session, &args).await;
    session.close().await;
    result
}

async fn purge_on(session: &Session, args: &PurgeArgs) -> Result<()> {
    let channel = session.channel().await?;
    let count = channel
        .queue_purge(&args.queue)
        .await
        .map_err(session.failed(format!("purge queue {:?}", args.queue)))?;
    say(format_args!(
        "purged {count} messages from queue {:?}",
        args.queue
    ))?;
    Ok(())
}
