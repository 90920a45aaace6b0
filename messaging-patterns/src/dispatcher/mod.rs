//! The dispatcher: a long-running consumer host driven by a YAML file (see [`config`] for
//! the file), as the `amqp-dispatcher` binary or embedded with handlers written in Rust.
//!
//! # Wire sequence
//!
//! ```text
//! start     connect (AMQP_URL, hosts in random order; AMQP_HEARTBEAT)
//!           exchange.declare / queue.declare / queue.bind for every entry of the file
//!           startup command, if any
//!           per consumer: channel.open; basic.qos prefetch_count; confirm.select;
//!           basic.consume queue
//! message   basic.deliver → an instance's handler → basic.ack (Ok) or basic.nack requeue
//!           (Err or panic: the instance is shut down and, after restart_pause, replaced)
//! shutdown  SIGINT/SIGTERM → basic.cancel; buffered and waiting messages basic.nack requeue;
//!           running handlers finish (until shutdown_timeout_ms) and are acked;
//!           handler shutdown; channel.close; connection.close
//! ```
//!
//! # Example
//!
//! ```no_run
//! use messaging_patterns::dispatcher::{
//!     Config, Dispatcher, Handler, HandlerError, Message, MessageHandle, Registry,
//! };
//!
//! struct Print;
//! impl Handler for Print {
//!     async fn consume(&mut self, message: Message, _: &MessageHandle) -> Result<(), HandlerError> {
//!         println!("{}: {:?}", message.routing_key, message.body);
//!         Ok(())
//!     }
//! }
//!
//! # async fn example() -> Result<(), messaging_patterns::dispatcher::DispatcherError> {
//! let mut registry = Registry::new();
//! registry.register("print", || Print);
//! let config = Config::parse("consumers:\n  - handler: print\n    queue: inbox\n", registry.names())?;
//! let connection = messaging_patterns::dispatcher::connection_config_from_env()?;
//! Dispatcher::new(config, registry, connection)?
//!     .run(messaging_patterns::dispatcher::shutdown_signal())
//!     .await
//! # }
//! ```

mod command;
pub mod config;
mod consumer;
mod handler;

use std::process::ExitCode;

use amqp_client::{
    Connection, ConnectionConfig, ExchangeDeclareOptions, FieldTable, QueueDeclareOptions,
};

pub use config::{Config, ConfigError, HandlerSpec, connection_config, connection_config_from_env};
pub use handler::{Handler, HandlerError, Message, MessageHandle, Registry};

use command::CommandHandler;
use handler::{DynHandler, Factory};

/// What can stop the dispatcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatcherError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The client failed: connecting, a declare refused, a consumer cancelled by the broker.
    #[error(transparent)]
    Client(#[from] amqp_client::Error),
    /// A consumer names a handler the registry does not have.
    #[error("consumer {consumer}: unknown handler {handler:?}")]
    UnknownHandler {
        /// The consumer.
        consumer: String,
        /// The handler it names.
        handler: String,
    },
    /// The startup command failed.
    #[error("startup command: {0}")]
    Startup(String),
}

/// A configured dispatcher, ready to run.
pub struct Dispatcher {
    config: Config,
    factories: Vec<Factory>,
    connection: ConnectionConfig,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .field("connection", &self.connection.redacted_uri())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher for `config`, with the handlers of `registry`, connecting with
    /// `connection`.
    ///
    /// # Errors
    /// [`DispatcherError::UnknownHandler`] when a consumer names a handler not registered.
    pub fn new(
        config: Config,
        registry: Registry,
        connection: ConnectionConfig,
    ) -> Result<Self, DispatcherError> {
        let factories = config
            .consumers
            .iter()
            .map(|consumer| factory(consumer, &registry))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config,
            factories,
            connection,
        })
    }

    /// Connects, declares, runs the startup command, consumes until `shutdown` completes (or
    /// a consumer is cancelled by the broker), then stops gracefully.
    ///
    /// # Errors
    /// When connecting or declaring fails, the startup command fails, or a consumer ended by
    /// itself (after the others were stopped gracefully).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DispatcherError> {
        let conn = Connection::connect_with(self.connection).await?;
        let result = run_on(&conn, &self.config, self.factories, shutdown).await;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the connection");
        }
        result
    }
}

fn factory(
    consumer: &config::ConsumerConfig,
    registry: &Registry,
) -> Result<Factory, DispatcherError> {
    match &consumer.handler {
        HandlerSpec::Registered(name) => {
            registry
                .factory(name)
                .ok_or_else(|| DispatcherError::UnknownHandler {
                    consumer: consumer.name.clone(),
                    handler: name.clone(),
                })
        }
        HandlerSpec::Command(command) => {
            let handler = CommandHandler::new(command, consumer.command_timeout);
            Ok(std::sync::Arc::new(move || {
                Box::new(handler.clone()) as Box<dyn DynHandler>
            }))
        }
    }
}

async fn run_on(
    conn: &Connection,
    config: &Config,
    factories: Vec<Factory>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DispatcherError> {
    declare(conn, config).await?;
    if let Some(command) = &config.startup_command {
        startup(command).await?;
    }
    let mut pools = Vec::new();
    for (consumer, factory) in config.consumers.iter().zip(factories) {
        match consumer::start(conn, consumer, factory).await {
            Ok(pool) => pools.push(pool),
            Err(e) => {
                stop_all(pools, config).await;
                return Err(e.into());
            }
        }
    }
    let failed = if pools.is_empty() {
        shutdown.await;
        None
    } else {
        let first_failure =
            futures_util::future::select_all(pools.iter_mut().map(|pool| Box::pin(pool.failed())));
        tokio::select! {
            () = shutdown => None,
            (error, _, _) = first_failure => Some(error),
        }
    };
    tracing::info!("shutting down");
    stop_all(pools, config).await;
    failed.map_or(Ok(()), |e| Err(e.into()))
}

async fn stop_all(pools: Vec<consumer::Pool>, config: &Config) {
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout();
    futures_util::future::join_all(pools.into_iter().map(|pool| pool.shutdown(deadline))).await;
}

/// Declares the file's exchanges, queues and bindings.
async fn declare(conn: &Connection, config: &Config) -> Result<(), DispatcherError> {
    let channel = conn.open_channel().await?;
    for exchange in &config.exchanges {
        let options = ExchangeDeclareOptions {
            durable: exchange.durable,
            auto_delete: exchange.auto_delete,
            ..Default::default()
        };
        channel
            .exchange_declare(&exchange.name, exchange.exchange_kind(), options)
            .await?;
    }
    for queue in &config.queues {
        let options = QueueDeclareOptions {
            passive: queue.passive,
            durable: queue.durable,
            exclusive: queue.exclusive,
            auto_delete: queue.auto_delete,
            arguments: queue.field_table(),
        };
        channel.queue_declare(&queue.name, options).await?;
        for binding in &queue.bindings {
            channel
                .queue_bind(
                    &queue.name,
                    &binding.exchange,
                    &binding.routing_key,
                    FieldTable::new(),
                )
                .await?;
        }
    }
    // Exclusive queues belong to the connection, not this channel: closing it keeps them.
    channel.close().await?;
    Ok(())
}

async fn startup(command: &[String]) -> Result<(), DispatcherError> {
    let Some((program, args)) = command.split_first() else {
        return Ok(());
    };
    let status = tokio::process::Command::new(program)
        .args(args)
        .status()
        .await
        .map_err(|e| DispatcherError::Startup(format!("{program}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(DispatcherError::Startup(format!("{program}: {status}")))
    }
}

/// Completes on SIGINT or SIGTERM (on Unix; Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the dispatcher");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How the command line ended: its exit code, and the line to show the person, for
/// standard output (`Ok`) or standard error (`Err`). The binary prints it; the library
/// itself never prints.
#[derive(Debug)]
pub struct Ended {
    /// The process's exit code.
    pub code: ExitCode,
    /// The line to print, if any.
    pub message: Option<Result<String, String>>,
}

impl Ended {
    fn error(code: u8, message: String) -> Self {
        Self {
            code: ExitCode::from(code),
            message: Some(Err(message)),
        }
    }
}

/// The `amqp-dispatcher` command line with the handlers of `registry`, for binaries that
/// register their own: `NAME --config FILE [--validate]`. Print [`Ended::message`] and exit
/// with [`Ended::code`].
///
/// Exit codes: 0 after a graceful shutdown or a valid file, 1 when the dispatcher failed,
/// 2 for a bad command line or configuration.
pub async fn main_with(registry: Registry) -> Ended {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, validate) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            return Ended::error(
                2,
                format!("{message}\nusage: amqp-dispatcher --config FILE [--validate]"),
            );
        }
    };
    let config = match Config::load(std::path::Path::new(&path), registry.names()) {
        Ok(config) => config,
        Err(e) => return Ended::error(2, format!("{path}: {e}")),
    };
    if validate {
        if let Err(e) = check_commands(&config) {
            return Ended::error(2, format!("{path}: {e}"));
        }
        let ok = format!("{path}: ok ({} consumers)", config.consumers.len());
        return Ended {
            code: ExitCode::SUCCESS,
            message: Some(Ok(ok)),
        };
    }
    let dispatcher = connection_config_from_env()
        .map_err(DispatcherError::from)
        .and_then(|connection| Dispatcher::new(config, registry, connection));
    let result = match dispatcher {
        Ok(dispatcher) => dispatcher.run(shutdown_signal()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ended {
            code: ExitCode::SUCCESS,
            message: None,
        },
        Err(e) => Ended::error(1, format!("amqp-dispatcher: {e}")),
    }
}

/// Checks that every external command's program exists (a path, or a name on `PATH`).
fn check_commands(config: &Config) -> Result<(), String> {
    for (i, consumer) in config.consumers.iter().enumerate() {
        let HandlerSpec::Command(command) = &consumer.handler else {
            continue;
        };
        let program = command.first().map(String::as_str).unwrap_or_default();
        let found = if program.contains('/') {
            std::path::Path::new(program).is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
            })
        };
        if !found {
            return Err(format!(
                "consumers[{i}].command: program {program:?} not found"
            ));
        }
    }
    Ok(())
}

/// `--config FILE` (or `--config=FILE`) and `--validate`.
fn parse_args(args: &[String]) -> Result<(String, bool), String> {
    let mut path = None;
    let mut validate = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--validate" => validate = true,
            "--config" => path = Some(args.next().ok_or("--config needs a file")?.clone()),
            other => match other.strip_prefix("--config=") {
                Some(file) => path = Some(file.to_owned()),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok((path.ok_or("--config FILE is required")?, validate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_line() {
        assert_eq!(
            parse_args(&args(&["--config", "a.yml"])),
            Ok(("a.yml".into(), false))
        );
        assert_eq!(
            parse_args(&args(&["--validate", "--config=b.yml"])),
            Ok(("b.yml".into(), true))
        );
        assert!(parse_args(&args(&["--validate"])).is_err());
        assert!(parse_args(&args(&["--config"])).is_err());
        assert!(parse_args(&args(&["-x"])).is_err());
    }
}
