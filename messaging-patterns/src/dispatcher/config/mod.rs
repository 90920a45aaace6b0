//! The dispatcher's YAML file, and its connection settings from the environment ([`mod@env`]).
//!
//! ```yaml
//! startup_command: ["/usr/local/bin/migrate"]   # optional: run once before consuming
//! startup_handler: app.startup:configure        # optional: Python, run first in each worker
//! python: python3                               # the interpreter of Python consumers
//! shutdown_timeout_ms: 30000                    # how long in-flight handlers may finish
//! env: { TZ: UTC }                              # extra variables for handler processes
//! exchanges:                                    # optional
//!   - name: orders
//!     type: topic                               # direct, fanout, topic, headers
//! queues:
//!   - name: orders.created                      # or `queue:`, as the original daemon
//!     durable: true                             # also auto_delete, exclusive, passive
//!     arguments:                                # any x- argument, RabbitMQ's spelling
//!       x-dead-letter-exchange: orders.dlx
//!       x-max-length: 100000
//!     x_message_ttl: 60000                      # the original's spelling also works
//!     bindings:
//!       - exchange: orders
//!         routing_key: "order.created.*"
//! consumers:
//!   - name: create-invoice                      # optional, for logs
//!     handler: invoice                          # a handler registered from Rust, or:
//!   # command: ["/usr/local/bin/invoice"]       # a process per message, or:
//!   # consumer: app.invoices:Consumer           # a Python class, long-lived worker
//!     queue: orders.created
//!     consumer_count: 4                         # instances
//!     prefetch_count: 20                        # default: consumer_count
//!     exclusivity_key: { header: customer-id }  # or routing_key_part: N, json_field: F
//!     restart_pause_ms: 1000                    # pause before replacing a failed instance
//!     command_timeout_ms: 300000                # per message, commands and Python workers
//!     max_output_bytes: 1048576                 # a command's stdout, a worker's line
//!     max_redeliveries: 5                       # failures before the dead-letter queue
//!     on_failure: requeue                       # or dead_letter, retry
//!     retry_delays_ms: [1000, 5000, 30000]      # on_failure: retry
//!     on_cancel: resubscribe                    # or exit
//!     reply_queues: ["replies.*"]               # reply_to a command may answer to
//!     rpc: false                                # true: replies are JSON envelopes
//! ```
//!
//! Errors name the line, column and field (`consumers: handler "invoise" is not registered
//! (registered: invoice) at line 21 column 5`): unknown fields, wrong types, a zero count,
//! an `arguments:` key spelled with underscores, and handler names missing from the
//! registry are all refused while parsing.

mod consumer;
pub mod env;
mod queue;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use consumer::{ConsumerConfig, ExclusivityKey, HandlerSpec, KeySource, OnCancel, OnFailure};
pub use env::{EnvConnection, connection_config, connection_config_from_env, connection_from_env};
pub use queue::{ArgumentValue, BindingConfig, ExchangeConfig, QueueConfig};

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema; the message names the field, the
    /// line and the column.
    #[error("{0}")]
    Yaml(String),
    /// An environment variable cannot be used.
    #[error("{var}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl From<serde_yaml_ng::Error> for ConfigError {
    fn from(e: serde_yaml_ng::Error) -> Self {
        // serde_yaml_ng's message already carries the field path and "at line L column C".
        Self::Yaml(e.to_string())
    }
}

/// The whole file: ours, or the original amqp-dispatcher's, verbatim.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// A command run once, after connecting and declaring, before consuming; a non-zero exit
    /// stops the dispatcher.
    #[serde(default)]
    pub startup_command: Option<Vec<String>>,
    /// A Python function, `module:function`, each Python worker calls before its first
    /// instance (the original daemon's `startup_handler`).
    #[serde(default)]
    pub startup_handler: Option<String>,
    /// The interpreter of Python consumers (`python3` on `PATH` by default).
    #[serde(default = "default_python")]
    pub python: String,
    /// How long in-flight handlers may take to finish on shutdown, in milliseconds.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_ms: u64,
    /// Variables handed to every handler process, on top of `PATH`, `HOME`, `LANG` and
    /// `PYTHONPATH` (the only ones passed on from the dispatcher's own environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Exchanges declared on start.
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
    /// Queues declared on start, with their bindings.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// The consumers to run.
    pub consumers: Vec<ConsumerConfig>,
}

fn default_shutdown_timeout() -> u64 {
    30_000
}

fn default_python() -> String {
    "python3".to_owned()
}

thread_local! {
    /// The handler names a parse on this thread accepts: set by [`Config::parse`] so that an
    /// unknown name is refused with the position serde_yaml_ng gives.
    static KNOWN_HANDLERS: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
}

fn check_handler(name: &str) -> Result<(), String> {
    KNOWN_HANDLERS.with(|known| match &*known.borrow() {
        Some(known) if !known.contains(name) => {
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            Err(format!(
                "handler {name:?} is not registered (registered: {})",
                names.join(", ")
            ))
        }
        _ => Ok(()),
    })
}

impl Config {
    /// Parses a configuration, refusing handler names not in `handlers`.
    ///
    /// # Errors
    /// [`ConfigError::Yaml`] with the field, line and column of the first problem.
    pub fn parse<'a>(
        yaml: &str,
        handlers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigError> {
        let known = handlers.into_iter().map(str::to_owned).collect();
        KNOWN_HANDLERS.with(|k| *k.borrow_mut() = Some(known));
        let parsed = serde_yaml_ng::from_str(yaml);
        KNOWN_HANDLERS.with(|k| *k.borrow_mut() = None);
        Ok(parsed?)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when it cannot be read, else as [`Config::parse`].
    pub fn load<'a>(
        path: &Path,
        handlers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ConfigError> {
        let yaml = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&yaml, handlers)
    }

    /// The shutdown deadline.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// Warnings about settings that work but not as well as they could (a prefetch that
    /// leaves instances idle).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .consumers
            .iter()
            .filter_map(ConsumerConfig::prefetch_warning)
            .collect();
        if self.startup_handler.is_some() && self.python_classes().next().is_none() {
            warnings.push(
                "startup_handler runs first in each Python worker, and no consumer is a \
                 Python class: it will not run (use startup_command)"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The Python consumers' classes (`module:Class`).
    pub fn python_classes(&self) -> impl Iterator<Item = &str> {
        self.consumers.iter().filter_map(|c| match &c.handler {
            HandlerSpec::Python(class) => Some(class.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_client::FieldValue;

    const GOOD: &str = "
exchanges:
  - name: orders
    type: topic
queues:
  - name: orders.created
    arguments:
      x-max-length: 10
      x-dead-letter-exchange: dlx
    bindings:
      - exchange: orders
        routing_key: order.*
consumers:
  - handler: invoice
    queue: orders.created
    consumer_count: 3
    prefetch_count: 7
    exclusivity_key:
      header: customer-id
  - command: [sh, -c, cat]
    queue: orders.created
    exclusivity_key: { routing_key_part: 1 }
";

    #[test]
    fn a_good_file() {
        let config = Config::parse(GOOD, ["invoice"]).unwrap();
        assert_eq!(
            config.queues[0]
                .field_table()
                .get("x-max-length")
                .and_then(FieldValue::as_i64),
            Some(10)
        );
        assert_eq!(
            config.queues[0]
                .field_table()
                .get("x-dead-letter-exchange")
                .and_then(FieldValue::as_str),
            Some("dlx")
        );
        assert!(config.queues[0].durable);
        let [invoice, command] = &config.consumers[..] else {
            panic!("two consumers")
        };
        assert_eq!(invoice.handler, HandlerSpec::Registered("invoice".into()));
        assert_eq!(invoice.name, "orders.created");
        assert_eq!(
            (invoice.consumer_count.get(), invoice.prefetch_count.get()),
            (3, 7)
        );
        assert_eq!(
            invoice.exclusivity_key,
            Some(ExclusivityKey {
                source: KeySource::Header("customer-id".into()),
                per_exchange: false
            })
        );
        assert_eq!(
            command.handler,
            HandlerSpec::Command(vec!["sh".into(), "-c".into(), "cat".into()])
        );
        assert_eq!(
            command.exclusivity_key,
            Some(ExclusivityKey {
                source: KeySource::RoutingKeyPart(1),
                per_exchange: false
            })
        );
        assert_eq!(command.restart_pause, Duration::from_secs(1));
        assert_eq!(config.shutdown_timeout(), Duration::from_secs(30));
    }

    fn error(yaml: &str) -> String {
        Config::parse(yaml, ["invoice"]).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field_and_the_line() {
        let unknown = error(&GOOD.replace("invoice\n    queue", "invoise\n    queue"));
        assert_eq!(
            unknown,
            "consumers: handler \"invoise\" is not registered (registered: invoice) \
             at line 14 column 3"
        );

        let typo = error(&GOOD.replace("prefetch_count", "prefech_count"));
        assert!(typo.contains("unknown field `prefech_count`"), "{typo}");
        assert!(typo.contains("consumers[0]: "), "{typo}");
        assert!(typo.contains("line 17 column 5"), "{typo}");

        let zero = error(&GOOD.replace("consumer_count: 3", "consumer_count: 0"));
        assert!(zero.contains("consumers[0].consumer_count"), "{zero}");
        assert!(zero.contains("line 16"), "{zero}");

        let both = error("consumers:\n  - handler: invoice\n    command: [x]\n    queue: q\n");
        assert!(
            both.contains("give one of handler, command or consumer"),
            "{both}"
        );
        assert!(error("queues: []\n").contains("missing field `consumers`"));
    }

    /// The original amqp-dispatcher 0.11 README's examples, verbatim (its queue, worker and
    /// startup sections, joined as one file).
    const ORIGINAL_README: &str = include_str!("../../../tests/fixtures/original-readme.yml");

    #[test]
    fn the_original_daemons_file_is_read_with_its_defaults() {
        let config = Config::parse(ORIGINAL_README, []).unwrap();
        assert_eq!(
            config.startup_handler.as_deref(),
            Some("amqpdispatcher.example_startup:startup")
        );
        let [mat, apsalar] = &config.queues[..] else {
            panic!("two queues")
        };
        assert_eq!(mat.name, "notify_mat_job");
        assert!(mat.passive && mat.durable && !mat.exclusive);
        assert!(mat.arguments.is_empty(), "null leaves the argument out");
        assert_eq!(mat.bindings.len(), 2);
        assert!(apsalar.durable, "durable by default");
        assert_eq!(apsalar.bindings[1].routing_key, "click.*");
        let classes: Vec<&str> = config.python_classes().collect();
        assert_eq!(
            classes,
            ["workers.module:Consumer", "workers.module_2:Consumer"]
        );
        assert_eq!(config.consumers[1].prefetch_count.get(), 10);
        assert_eq!(config.consumers[1].consumer_count.get(), 2);
        assert!(config.warnings().is_empty());

        let legacy = Config::parse(
            "queues:\n  - queue: q\n    x_max_length: 5\n    x_dead_letter_exchange: dlx\n\
             consumers:\n  - { consumer: m:C, queue: q, consumer_count: 3 }\n",
            [],
        )
        .unwrap();
        let table = legacy.queues[0].field_table();
        assert_eq!(
            table.get("x-max-length").and_then(FieldValue::as_i64),
            Some(5)
        );
        assert_eq!(
            table
                .get("x-dead-letter-exchange")
                .and_then(FieldValue::as_str),
            Some("dlx")
        );
        assert_eq!(
            legacy.consumers[0].prefetch_count.get(),
            3,
            "the default prefetch lets every instance work"
        );
    }

    #[test]
    fn underscored_arguments_name_the_right_spelling() {
        let e = error("queues:\n  - name: q\n    arguments: { x_max_length: 5 }\nconsumers: []\n");
        assert!(e.contains("write \"x-max-length\""), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let both = error(
            "queues:\n  - name: q\n    x_max_length: 5\n    arguments: { x-max-length: 6 }\nconsumers: []\n",
        );
        assert!(
            both.contains("x_max_length and arguments.x-max-length both given"),
            "{both}"
        );
        let low = Config::parse(
            "consumers:\n  - { handler: invoice, queue: q, consumer_count: 3, prefetch_count: 1 }\n",
            ["invoice"],
        )
        .unwrap();
        assert!(low.warnings()[0].contains("prefetch_count 1 is below consumer_count 3"));
        let lonely = Config::parse(
            "startup_handler: app:start\nconsumers:\n  - { command: [x], queue: q }\n",
            [],
        )
        .unwrap();
        assert!(lonely.warnings()[0].contains("it will not run"));
        let bad = error("consumers:\n  - { consumer: nocolon, queue: q }\n");
        assert!(bad.contains("not of the form module:Class"), "{bad}");
    }

    #[test]
    fn reply_queues_and_exclusivity_by_json_field() {
        let config = Config::parse(
            "consumers:\n  - command: [cat]\n    queue: q\n    reply_queues: [replies, 'svc.*']\n\
             \x20   exclusivity_key: { json_field: domain, scope: exchange }\n",
            [],
        )
        .unwrap();
        let consumer = &config.consumers[0];
        assert!(consumer.reply_allowed("amq.rabbitmq.reply-to.g2dkAA"));
        assert!(consumer.reply_allowed("replies") && consumer.reply_allowed("svc.a"));
        assert!(!consumer.reply_allowed("orders") && !consumer.reply_allowed("replies2"));
        assert_eq!(
            consumer.exclusivity_key,
            Some(ExclusivityKey {
                source: KeySource::JsonField("domain".into()),
                per_exchange: true
            })
        );
        assert_eq!(consumer.command_timeout, Duration::from_secs(300));
        assert_eq!(
            (consumer.max_redeliveries, consumer.on_failure),
            (5, OnFailure::Requeue)
        );
    }
}
