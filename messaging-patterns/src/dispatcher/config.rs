//! The dispatcher's YAML file, and its connection settings from the environment.
//!
//! ```yaml
//! startup_command: ["/usr/local/bin/migrate"]   # optional: run once before consuming
//! shutdown_timeout_ms: 30000                    # how long in-flight handlers may finish
//! exchanges:                                    # optional
//!   - name: orders
//!     type: topic                               # direct, fanout, topic, headers
//! queues:
//!   - name: orders.created
//!     durable: true                             # also auto_delete, exclusive, passive
//!     arguments:                                # any x- argument
//!       x-dead-letter-exchange: orders.dlx
//!       x-max-length: 100000
//!       x-message-ttl: 60000
//!     bindings:
//!       - exchange: orders
//!         routing_key: "order.created.*"
//! consumers:
//!   - name: create-invoice                      # optional, for logs
//!     handler: invoice                          # a handler registered from Rust, or:
//!   # command: ["/usr/local/bin/invoice", "--fast"]
//!     queue: orders.created
//!     consumer_count: 4                         # instances
//!     prefetch_count: 20
//!     exclusivity_key: { header: customer-id }  # or { routing_key_part: 2 }
//!     restart_pause_ms: 1000                    # pause before replacing a failed instance
//!     command_timeout_ms: 60000                 # external commands only
//! ```
//!
//! Errors name the line, column and field (`consumers: handler "invoise" is not registered
//! (registered: invoice) at line 21 column 5`): unknown fields, wrong types, a zero count, and handler names missing
//! from the registry are all refused while parsing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU16, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

use amqp_client::{ConnectionConfig, ExchangeKind, FieldTable, FieldValue};
use serde::Deserialize;

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

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// A command run once, after connecting and declaring, before consuming; a non-zero exit
    /// stops the dispatcher.
    #[serde(default)]
    pub startup_command: Option<Vec<String>>,
    /// How long in-flight handlers may take to finish on shutdown, in milliseconds.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_ms: u64,
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

/// An exchange to declare.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExchangeConfig {
    /// Its name.
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers` (or a plugin's type).
    #[serde(rename = "type")]
    pub kind: String,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last binding goes.
    #[serde(default)]
    pub auto_delete: bool,
}

impl ExchangeConfig {
    /// The exchange kind.
    pub fn exchange_kind(&self) -> ExchangeKind {
        match self.kind.as_str() {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            other => ExchangeKind::Custom(other.to_owned()),
        }
    }
}

fn yes() -> bool {
    true
}

/// A queue to declare.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Its name.
    pub name: String,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last consumer goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Only this connection may use it.
    #[serde(default)]
    pub exclusive: bool,
    /// Only check that it exists.
    #[serde(default)]
    pub passive: bool,
    /// `x-` arguments: dead-letter exchange, max length, expires, message TTL, queue type...
    #[serde(default)]
    pub arguments: BTreeMap<String, ArgumentValue>,
    /// Its bindings.
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
}

impl QueueConfig {
    /// The arguments as a field table.
    pub fn field_table(&self) -> FieldTable {
        let mut table = FieldTable::new();
        for (name, value) in &self.arguments {
            let value: FieldValue = match value {
                ArgumentValue::Bool(b) => (*b).into(),
                ArgumentValue::Int(i) => (*i).into(),
                ArgumentValue::Float(f) => (*f).into(),
                ArgumentValue::Text(s) => s.as_str().into(),
            };
            table.insert(name, value);
        }
        table
    }
}

/// A queue argument's value.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ArgumentValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer (sent as a signed 64-bit integer).
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// A string.
    Text(String),
}

/// A binding of a queue to an exchange.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BindingConfig {
    /// The exchange.
    pub exchange: String,
    /// The routing key or pattern.
    #[serde(default)]
    pub routing_key: String,
}

/// Which messages may not be handled at the same time: `{ header: NAME }` or
/// `{ routing_key_part: N }`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawExclusivityKey")]
#[non_exhaustive]
pub enum ExclusivityKey {
    /// The value of this header.
    Header(String),
    /// This part (from 0) of the routing key split at dots.
    RoutingKeyPart(usize),
}

// A map rather than an enum: serde_yaml_ng reads enums as `!tag` values, which operators do
// not write.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExclusivityKey {
    header: Option<String>,
    routing_key_part: Option<usize>,
}

impl TryFrom<RawExclusivityKey> for ExclusivityKey {
    type Error = &'static str;

    fn try_from(raw: RawExclusivityKey) -> Result<Self, Self::Error> {
        match (raw.header, raw.routing_key_part) {
            (Some(header), None) => Ok(Self::Header(header)),
            (None, Some(part)) => Ok(Self::RoutingKeyPart(part)),
            _ => Err("exclusivity_key takes one of header or routing_key_part"),
        }
    }
}

/// What handles a consumer's messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerSpec {
    /// A handler registered from Rust under this name.
    Registered(String),
    /// An external command (program and arguments), run once per message.
    Command(Vec<String>),
}

/// A consumer: instances of one handler on one queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawConsumer")]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Its name in logs (the queue's when not given).
    pub name: String,
    /// What handles the messages.
    pub handler: HandlerSpec,
    /// The queue consumed.
    pub queue: String,
    /// Instances handling messages at once.
    pub consumer_count: NonZeroUsize,
    /// Unacknowledged messages the broker sends ahead (`basic.qos`).
    pub prefetch_count: NonZeroU16,
    /// Messages with the same key are never handled at the same time.
    pub exclusivity_key: Option<ExclusivityKey>,
    /// The pause before a failed instance is replaced.
    pub restart_pause: Duration,
    /// The longest an external command may run (killed after).
    pub command_timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    name: Option<String>,
    handler: Option<String>,
    command: Option<Vec<String>>,
    queue: String,
    #[serde(default = "one")]
    consumer_count: NonZeroUsize,
    #[serde(default = "one_u16")]
    prefetch_count: NonZeroU16,
    exclusivity_key: Option<ExclusivityKey>,
    #[serde(default = "default_restart_pause")]
    restart_pause_ms: u64,
    command_timeout_ms: Option<u64>,
}

fn one() -> NonZeroUsize {
    NonZeroUsize::MIN
}

fn one_u16() -> NonZeroU16 {
    NonZeroU16::MIN
}

fn default_restart_pause() -> u64 {
    1000
}

impl TryFrom<RawConsumer> for ConsumerConfig {
    type Error = String;

    fn try_from(raw: RawConsumer) -> Result<Self, String> {
        let handler = match (raw.handler, raw.command) {
            (Some(name), None) => {
                check_handler(&name)?;
                HandlerSpec::Registered(name)
            }
            (None, Some(command)) if !command.is_empty() => HandlerSpec::Command(command),
            (None, Some(_)) => return Err("command must name a program".to_owned()),
            (Some(_), Some(_)) => return Err("give handler or command, not both".to_owned()),
            (None, None) => return Err("missing handler (or command)".to_owned()),
        };
        Ok(Self {
            name: raw.name.unwrap_or_else(|| raw.queue.clone()),
            handler,
            queue: raw.queue,
            consumer_count: raw.consumer_count,
            prefetch_count: raw.prefetch_count,
            exclusivity_key: raw.exclusivity_key,
            restart_pause: Duration::from_millis(raw.restart_pause_ms),
            command_timeout: raw.command_timeout_ms.map(Duration::from_millis),
        })
    }
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
}

/// The connection settings from `AMQP_URL` and `AMQP_HEARTBEAT` (as [`connection_config`]
/// does), `AMQP_URL` defaulting to `amqp://guest:guest@localhost:5672/%2f`.
///
/// # Errors
/// [`ConfigError::Env`] for a URL or heartbeat that cannot be used.
pub fn connection_config_from_env() -> Result<ConnectionConfig, ConfigError> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@localhost:5672/%2f".to_owned());
    let heartbeat = std::env::var("AMQP_HEARTBEAT").ok();
    connection_config(&url, heartbeat.as_deref())
}

/// Connection settings from an `AMQP_URL` value and an `AMQP_HEARTBEAT` value (seconds).
///
/// The URL may list several brokers, either as several URLs separated by commas
/// (`amqp://u:p@a/vh,amqp://u:p@b/vh`: credentials and vhost come from the first) or as one
/// URL with several hosts (`amqp://u:p@a,b:5673/vh`). The client tries them in random order.
///
/// # Errors
/// [`ConfigError::Env`] for a URL or heartbeat that cannot be used.
pub fn connection_config(
    url: &str,
    heartbeat: Option<&str>,
) -> Result<ConnectionConfig, ConfigError> {
    let env = |var, e: &dyn std::fmt::Display| ConfigError::Env {
        var,
        reason: e.to_string(),
    };
    let mut parts = split_urls(url).into_iter();
    let first = parts.next().unwrap_or_default();
    let mut config = ConnectionConfig::from_uri(first).map_err(|e| env("AMQP_URL", &e))?;
    for part in parts {
        let other = ConnectionConfig::from_uri(part).map_err(|e| env("AMQP_URL", &e))?;
        config.endpoints.extend(other.endpoints);
    }
    if let Some(heartbeat) = heartbeat.filter(|h| !h.trim().is_empty()) {
        let seconds = heartbeat
            .trim()
            .parse::<u16>()
            .map_err(|e| env("AMQP_HEARTBEAT", &e))?;
        config.heartbeat = Some(seconds);
    }
    Ok(config)
}

/// Splits `url` at the commas that start another `amqp://` / `amqps://` URL.
fn split_urls(url: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in url.match_indices(',') {
        let rest = url[i + 1..].trim_start();
        if rest.starts_with("amqp://") || rest.starts_with("amqps://") {
            parts.push(url[start..i].trim());
            start = i + 1;
        }
    }
    parts.push(url[start..].trim());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(ExclusivityKey::Header("customer-id".into()))
        );
        assert_eq!(
            command.handler,
            HandlerSpec::Command(vec!["sh".into(), "-c".into(), "cat".into()])
        );
        assert_eq!(
            command.exclusivity_key,
            Some(ExclusivityKey::RoutingKeyPart(1))
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
        assert!(both.contains("give handler or command, not both"), "{both}");
        assert!(error("queues: []\n").contains("missing field `consumers`"));
    }

    #[test]
    fn urls_and_heartbeat() {
        let config =
            connection_config("amqp://u:p@a:5672/vh, amqp://u:p@b:5673/vh", Some("15")).unwrap();
        let hosts: Vec<String> = config.endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["a:5672", "b:5673"]);
        assert_eq!(
            (config.virtual_host.as_str(), config.heartbeat),
            ("vh", Some(15))
        );
        let config = connection_config("amqp://u:p@a,b:5673/%2f", None).unwrap();
        assert_eq!(config.endpoints.len(), 2);
        let bad = connection_config("amqp://a", Some("soon")).unwrap_err();
        assert!(bad.to_string().starts_with("AMQP_HEARTBEAT: "), "{bad}");
        assert!(connection_config("http://a", None).is_err());
    }
}
