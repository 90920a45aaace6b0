//! Exchanges, queues and bindings of the file, in our spelling (`name:`, `arguments:`) or
//! the original amqp-dispatcher's (`queue:`, `x_max_length:`, ...).

use std::collections::BTreeMap;

use amqp_client::{ExchangeKind, FieldTable, FieldValue};
use serde::Deserialize;

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

pub(super) fn yes() -> bool {
    true
}

/// A queue to declare.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawQueue")]
#[non_exhaustive]
pub struct QueueConfig {
    /// Its name (`name:`, or `queue:` as the original daemon spells it).
    pub name: String,
    /// Survives a broker restart (default true).
    pub durable: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Only this connection may use it.
    pub exclusive: bool,
    /// Only check that it exists.
    pub passive: bool,
    /// `x-` arguments: dead-letter exchange, max length, expires, message TTL, queue type...
    /// The original daemon's `x_dead_letter_exchange`, `x_dead_letter_routing_key`,
    /// `x_max_length`, `x_expires`, `x_message_ttl` and `x_queue_type` keys land here with
    /// RabbitMQ's spelling (`null` leaves the argument out).
    pub arguments: BTreeMap<String, ArgumentValue>,
    /// Its bindings.
    pub bindings: Vec<BindingConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    #[serde(alias = "queue")]
    name: String,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    passive: bool,
    #[serde(default)]
    arguments: BTreeMap<String, ArgumentValue>,
    #[serde(default)]
    bindings: Option<Vec<BindingConfig>>,
    x_dead_letter_exchange: Option<String>,
    x_dead_letter_routing_key: Option<String>,
    x_max_length: Option<i64>,
    x_expires: Option<i64>,
    x_message_ttl: Option<i64>,
    x_queue_type: Option<String>,
}

impl TryFrom<RawQueue> for QueueConfig {
    type Error = String;

    fn try_from(raw: RawQueue) -> Result<Self, String> {
        let mut arguments = raw.arguments;
        if let Some(bad) = arguments.keys().find(|k| k.starts_with("x_")) {
            return Err(format!(
                "arguments: {bad:?} is not an argument RabbitMQ knows (it would be ignored); \
                 write {:?}",
                bad.replace('_', "-")
            ));
        }
        let legacy = [
            (
                "x-dead-letter-exchange",
                raw.x_dead_letter_exchange.map(ArgumentValue::Text),
            ),
            (
                "x-dead-letter-routing-key",
                raw.x_dead_letter_routing_key.map(ArgumentValue::Text),
            ),
            ("x-max-length", raw.x_max_length.map(ArgumentValue::Int)),
            ("x-expires", raw.x_expires.map(ArgumentValue::Int)),
            ("x-message-ttl", raw.x_message_ttl.map(ArgumentValue::Int)),
            ("x-queue-type", raw.x_queue_type.map(ArgumentValue::Text)),
        ];
        for (name, value) in legacy {
            let Some(value) = value else { continue };
            if arguments.insert(name.to_owned(), value).is_some() {
                return Err(format!(
                    "{} and arguments.{name} both given",
                    name.replace('-', "_")
                ));
            }
        }
        Ok(Self {
            name: raw.name,
            durable: raw.durable,
            auto_delete: raw.auto_delete,
            exclusive: raw.exclusive,
            passive: raw.passive,
            arguments,
            bindings: raw.bindings.unwrap_or_default(),
        })
    }
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
