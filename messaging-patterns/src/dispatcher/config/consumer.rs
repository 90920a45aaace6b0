//! A consumer entry of the file: what handles the messages, how many at once, and what
//! happens to a message that keeps failing.

use std::collections::BTreeMap;
use std::num::{NonZeroU16, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::check_handler;

/// Which messages may not be handled at the same time: `{ header: NAME }`,
/// `{ routing_key_part: N }` or `{ json_field: NAME }` (a top-level field of a JSON body),
/// with `scope: consumer` (the default) or `scope: exchange` (the same value through two
/// exchanges is two keys).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawExclusivityKey")]
#[non_exhaustive]
pub struct ExclusivityKey {
    /// Where the key comes from.
    pub source: KeySource,
    /// True when the key is scoped to the exchange the message came through.
    pub per_exchange: bool,
}

/// Where an exclusivity key is read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// The value of this header.
    Header(String),
    /// This part (from 0) of the routing key split at dots.
    RoutingKeyPart(usize),
    /// This top-level field of a JSON object body (a string or a number).
    JsonField(String),
}

// A map rather than an enum: serde_yaml_ng reads enums as `!tag` values, which operators do
// not write.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExclusivityKey {
    header: Option<String>,
    routing_key_part: Option<usize>,
    json_field: Option<String>,
    #[serde(default)]
    scope: Scope,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Scope {
    #[default]
    Consumer,
    Exchange,
}

impl TryFrom<RawExclusivityKey> for ExclusivityKey {
    type Error = &'static str;

    fn try_from(raw: RawExclusivityKey) -> Result<Self, Self::Error> {
        let source = match (raw.header, raw.routing_key_part, raw.json_field) {
            (Some(header), None, None) => KeySource::Header(header),
            (None, Some(part), None) => KeySource::RoutingKeyPart(part),
            (None, None, Some(field)) => KeySource::JsonField(field),
            _ => return Err("exclusivity_key takes one of header, routing_key_part or json_field"),
        };
        Ok(Self {
            source,
            per_exchange: raw.scope == Scope::Exchange,
        })
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
    /// A Python 3 class, `module:Class`, run by a long-lived worker process per instance.
    Python(String),
}

/// What happens to a message whose handler failed (and that has failed fewer than
/// `max_redeliveries` times).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnFailure {
    /// Back to the tail of its queue at once, with its failure count.
    #[default]
    Requeue,
    /// To the dead-letter queue `<queue>.dead` at the first failure.
    DeadLetter,
    /// To the delay queue `<queue>.delay.<ms>`, which hands it back after the delay.
    Retry,
}

/// What the dispatcher does when the broker cancels a consumer (its queue was deleted).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnCancel {
    /// Consume again, with a backoff of 1 s doubling up to 30 s.
    #[default]
    Resubscribe,
    /// Stop the dispatcher (exit code 1).
    Exit,
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
    /// Unacknowledged messages the broker sends ahead (`basic.qos`); by default as many as
    /// there are instances, so that every instance has work.
    pub prefetch_count: NonZeroU16,
    /// Messages with the same key are never handled at the same time.
    pub exclusivity_key: Option<ExclusivityKey>,
    /// The pause before a failed instance is replaced.
    pub restart_pause: Duration,
    /// The longest one message may take in an external command or a Python worker (the
    /// process is killed after); 5 minutes by default.
    pub command_timeout: Duration,
    /// The most a command may print (or a worker send in one line); 1 MiB by default.
    pub max_output: usize,
    /// Failures after which a message goes to the dead-letter queue whatever `on_failure`
    /// says (5 by default).
    pub max_redeliveries: u32,
    /// What happens to a message whose handler failed.
    pub on_failure: OnFailure,
    /// The delays of `on_failure: retry` (the last repeats).
    pub retry_delays: Vec<Duration>,
    /// What happens when the broker cancels the consumer.
    pub on_cancel: OnCancel,
    /// Queues a message's `reply_to` may name for a command's output, besides
    /// `amq.rabbitmq.reply-to.*`; a trailing `*` matches a prefix.
    pub reply_queues: Vec<String>,
    /// Variables handed to the handler processes (on top of the file's `env:`).
    pub env: BTreeMap<String, String>,
    /// True when the consumer answers RPCs: every reply to a `reply_to` is the JSON
    /// envelope `{"success", "data", "message"}`, failures included.
    pub rpc: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    name: Option<String>,
    handler: Option<String>,
    command: Option<Vec<String>>,
    consumer: Option<String>,
    queue: String,
    #[serde(default = "one")]
    consumer_count: NonZeroUsize,
    prefetch_count: Option<NonZeroU16>,
    exclusivity_key: Option<ExclusivityKey>,
    #[serde(default = "default_restart_pause")]
    restart_pause_ms: u64,
    #[serde(default = "default_command_timeout")]
    command_timeout_ms: u64,
    #[serde(default = "default_max_output")]
    max_output_bytes: usize,
    #[serde(default = "default_max_redeliveries")]
    max_redeliveries: u32,
    #[serde(default)]
    on_failure: OnFailure,
    #[serde(default = "default_retry_delays")]
    retry_delays_ms: Vec<u64>,
    #[serde(default)]
    on_cancel: OnCancel,
    #[serde(default)]
    reply_queues: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    rpc: bool,
}

fn one() -> NonZeroUsize {
    NonZeroUsize::MIN
}

fn default_restart_pause() -> u64 {
    1000
}

fn default_command_timeout() -> u64 {
    300_000
}

fn default_max_output() -> usize {
    1 << 20
}

fn default_max_redeliveries() -> u32 {
    5
}

fn default_retry_delays() -> Vec<u64> {
    vec![1000, 5000, 30_000]
}

fn handler_spec(raw: &mut RawConsumer) -> Result<HandlerSpec, String> {
    match (raw.handler.take(), raw.command.take(), raw.consumer.take()) {
        (Some(name), None, None) => {
            check_handler(&name)?;
            Ok(HandlerSpec::Registered(name))
        }
        (None, Some(command), None) if !command.is_empty() => Ok(HandlerSpec::Command(command)),
        (None, Some(_), None) => Err("command must name a program".to_owned()),
        (None, None, Some(class)) => match class.split_once(':') {
            Some((module, name)) if !module.is_empty() && !name.is_empty() => {
                Ok(HandlerSpec::Python(class))
            }
            _ => Err(format!(
                "consumer {class:?} is not of the form module:Class"
            )),
        },
        (None, None, None) => Err("missing handler (or command, or consumer)".to_owned()),
        _ => Err("give one of handler, command or consumer".to_owned()),
    }
}

impl TryFrom<RawConsumer> for ConsumerConfig {
    type Error = String;

    fn try_from(mut raw: RawConsumer) -> Result<Self, String> {
        let handler = handler_spec(&mut raw)?;
        let instances = u16::try_from(raw.consumer_count.get()).unwrap_or(u16::MAX);
        let prefetch_count = raw
            .prefetch_count
            .unwrap_or(NonZeroU16::new(instances).unwrap_or(NonZeroU16::MIN));
        if raw.retry_delays_ms.is_empty() && raw.on_failure == OnFailure::Retry {
            return Err("on_failure: retry needs at least one retry_delays_ms".to_owned());
        }
        Ok(Self {
            name: raw.name.unwrap_or_else(|| raw.queue.clone()),
            handler,
            queue: raw.queue,
            consumer_count: raw.consumer_count,
            prefetch_count,
            exclusivity_key: raw.exclusivity_key,
            restart_pause: Duration::from_millis(raw.restart_pause_ms),
            command_timeout: Duration::from_millis(raw.command_timeout_ms),
            max_output: raw.max_output_bytes,
            max_redeliveries: raw.max_redeliveries,
            on_failure: raw.on_failure,
            retry_delays: raw
                .retry_delays_ms
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            on_cancel: raw.on_cancel,
            reply_queues: raw.reply_queues,
            env: raw.env,
            rpc: raw.rpc,
        })
    }
}

impl ConsumerConfig {
    /// Why the prefetch leaves instances idle, if it does: fewer messages in flight than
    /// instances means some never get one.
    pub fn prefetch_warning(&self) -> Option<String> {
        let prefetch = usize::from(self.prefetch_count.get());
        let instances = self.consumer_count.get();
        (prefetch < instances).then(|| {
            format!(
                "consumer {}: prefetch_count {prefetch} is below consumer_count {instances}; \
                 only {prefetch} instances can work at once",
                self.name
            )
        })
    }

    /// True when `reply_to` may receive a command's output: a direct reply-to
    /// pseudo-queue, or a queue of `reply_queues`.
    pub fn reply_allowed(&self, reply_to: &str) -> bool {
        reply_to.starts_with("amq.rabbitmq.reply-to")
            || self
                .reply_queues
                .iter()
                .any(|allowed| match allowed.strip_suffix('*') {
                    Some(prefix) => reply_to.starts_with(prefix),
                    None => allowed == reply_to,
                })
    }
}
