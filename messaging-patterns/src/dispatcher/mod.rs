//! The dispatcher: a long-running consumer host driven by a YAML file (see [`config`] for
//! the file), as the `amqp-dispatcher` binary or embedded with handlers written in Rust.
//!
//! # Wire sequence
//!
//! ```text
//! start     connect (AMQP_URL or RABBITMQ_URL, hosts in random order; heartbeat)
//!           exchange.declare / queue.declare / queue.bind for every entry of the file
//!           startup command, if any; Python consumers imported in a worker (--check)
//!           per consumer: queue.declare Q.dead (and Q.delay.<ms> for on_failure: retry);
//!           channel.open; basic.qos prefetch_count; basic.consume queue
//! message   basic.deliver → an instance's handler → basic.ack (Ok), or on failure or
//!           panic the consumer's on_failure (see [`failure`]); the instance is shut down
//!           and, after restart_pause, replaced
//! publish   handlers publish on a confirm-mode channel of the consumer's own
//! cancel    basic.cancel from the broker → consume again with backoff (on_cancel)
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

mod cli;
mod command;
pub mod config;
mod consumer;
pub mod failure;
mod handler;
mod health;
mod process;
mod publisher;
mod router;
mod worker;

use std::sync::Arc;

use amqp_client::{
    Connection, ConnectionConfig, ExchangeDeclareOptions, FieldTable, QueueDeclareOptions,
};

pub use cli::{Ended, main_with};
pub use config::{Config, ConfigError, HandlerSpec, connection_config, connection_config_from_env};
pub use handler::{Handler, HandlerError, Message, MessageHandle, Registry};
pub use health::{Health, serve_http};

use command::CommandHandler;
use handler::{DynHandler, Factory};
use worker::{PythonWorker, WorkerSpec};

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
    /// A Python consumer class or the startup handler does not import.
    #[error("python consumers: {0}")]
    Python(String),
}

/// A configured dispatcher, ready to run.
pub struct Dispatcher {
    config: Config,
    factories: Vec<Factory>,
    connection: ConnectionConfig,
    health: Health,
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
            .map(|consumer| factory(&config, consumer, &registry))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config,
            factories,
            connection,
            health: Health::default(),
        })
    }

    /// What `/readyz` reports for this dispatcher once it runs (see [`serve_http`]).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Connects, declares, runs the startup command, consumes until `shutdown` completes (or
    /// a consumer is cancelled by the broker), then stops gracefully.
    ///
    /// # Errors
    /// When connecting or declaring fails, the startup command fails, or a consumer ended by
    /// itself (after the others were stopped gracefully).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DispatcherError> {
        check_python(&self.config).await?;
        let conn = Connection::connect_with(self.connection).await?;
        self.health.connected(&conn, self.config.consumers.len());
        let result = run_on(&conn, &self.config, self.factories, &self.health, shutdown).await;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the connection");
        }
        result
    }
}

fn factory(
    config: &Config,
    consumer: &config::ConsumerConfig,
    registry: &Registry,
) -> Result<Factory, DispatcherError> {
    let env = || process::handler_env(&config.env, &consumer.env);
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
            let handler = CommandHandler::new(command, Arc::new(consumer.clone()), env());
            Ok(Arc::new(move || {
                Box::new(handler.clone()) as Box<dyn DynHandler>
            }))
        }
        HandlerSpec::Python(class) => {
            let spec = Arc::new(WorkerSpec {
                python: config.python.clone(),
                class: class.clone(),
                startup: config.startup_handler.clone(),
                env: env(),
                timeout: consumer.command_timeout,
                max_line: consumer.max_output.saturating_mul(2).max(1 << 16),
            });
            Ok(Arc::new(move || {
                Box::new(PythonWorker::new(spec.clone())) as Box<dyn DynHandler>
            }))
        }
        // HandlerSpec is non-exhaustive for users; every variant is handled above.
        #[allow(unreachable_patterns)]
        other => Err(DispatcherError::UnknownHandler {
            consumer: consumer.name.clone(),
            handler: format!("{other:?}"),
        }),
    }
}

/// Imports the Python consumers and the startup handler in a worker, as a run will.
///
/// # Errors
/// [`DispatcherError::Python`] with the worker's complaints.
pub async fn check_python(config: &Config) -> Result<(), DispatcherError> {
    let classes: Vec<&str> = config.python_classes().collect();
    if classes.is_empty() && config.startup_handler.is_none() {
        return Ok(());
    }
    let env = process::handler_env(&config.env, &Default::default());
    worker::check(
        &config.python,
        &classes,
        config.startup_handler.as_deref(),
        &env,
    )
    .await
    .map_err(DispatcherError::Python)
}

async fn run_on(
    conn: &Connection,
    config: &Config,
    factories: Vec<Factory>,
    health: &Health,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DispatcherError> {
    declare(conn, config).await?;
    if let Some(command) = &config.startup_command {
        startup(command).await?;
    }
    let mut pools = Vec::new();
    for (consumer, factory) in config.consumers.iter().zip(factories) {
        match consumer::start(conn, Arc::new(consumer.clone()), factory).await {
            Ok(pool) => {
                health.consuming(&pool.name, pool.ready.clone());
                pools.push(pool);
            }
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
        channel
            .queue_declare(&queue.name, options)
            .await
            .map_err(|e| passive_hint(queue, e))?;
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

/// A failed passive declare says what `passive: true` means: the original daemon ignored
/// it and created the queue.
fn passive_hint(queue: &config::QueueConfig, e: amqp_client::Error) -> DispatcherError {
    if queue.passive {
        DispatcherError::Startup(format!(
            "queue {:?} is declared passive (it must exist already; the original \
             amqp-dispatcher ignored `passive` and created it): {e}",
            queue.name
        ))
    } else {
        e.into()
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
