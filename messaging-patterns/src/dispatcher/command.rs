//! External command handlers: one process per message.
//!
//! ```text
//! stdin    the body
//! env      PATH, HOME, LANG and PYTHONPATH from the dispatcher's environment, the file's and
//!          the consumer's `env:`, and for the message: AMQP_EXCHANGE, AMQP_ROUTING_KEY,
//!          AMQP_REDELIVERED (true/false), and each property that is set: AMQP_CONTENT_TYPE,
//!          AMQP_CONTENT_ENCODING, AMQP_DELIVERY_MODE, AMQP_PRIORITY, AMQP_CORRELATION_ID,
//!          AMQP_REPLY_TO, AMQP_EXPIRATION, AMQP_MESSAGE_ID, AMQP_TIMESTAMP, AMQP_TYPE,
//!          AMQP_USER_ID, AMQP_APP_ID; each header with a string or integer value as
//!          AMQP_HEADER_<NAME> (upper case, other than letters and digits as _). Nothing
//!          else: the broker URL and its password never reach a handler.
//! exit 0   ack; stdout (at most max_output_bytes) is published to reply_to with the
//!          correlation id, when reply_to is a direct reply-to queue or one of reply_queues
//! exit ≠ 0 the consumer's on_failure; the instance is replaced after the consumer's pause
//! timeout  killed after command_timeout_ms (5 minutes by default): a failure
//! ```
//!
//! A message that cannot be put into a process's environment (a NUL octet in a header) is
//! not a handler failure: it goes straight to the dead-letter queue.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use amqp_client::{BasicProperties, FieldValue};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::ConsumerConfig;
use super::handler::{
    BoxFuture, DynHandler, Failure, Message, MessageHandle, number_properties, reply_to,
    string_properties,
};
use super::process;

/// Runs a command per message (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct CommandHandler {
    program: String,
    args: Vec<String>,
    env: Arc<Vec<(String, String)>>,
    timeout: Duration,
    max_output: usize,
    consumer: Arc<ConsumerConfig>,
}

impl CommandHandler {
    /// `command[0]` is the program, the rest its arguments; `env` the process's base
    /// environment.
    pub(crate) fn new(
        command: &[String],
        consumer: Arc<ConsumerConfig>,
        env: Vec<(String, String)>,
    ) -> Self {
        let (program, args) = command.split_first().map_or_else(
            || (String::new(), Vec::new()),
            |(p, a)| (p.clone(), a.to_vec()),
        );
        Self {
            program,
            args,
            env: Arc::new(env),
            timeout: consumer.command_timeout,
            max_output: consumer.max_output,
            consumer,
        }
    }

    async fn run(&self, message: &Message) -> Result<Bytes, Failure> {
        let mut env = self.env.to_vec();
        env.extend(environment(message));
        if let Some((name, _)) = env
            .iter()
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(Failure::Undeliverable(format!(
                "{name} would hold a NUL octet, which no process environment can"
            )));
        }
        let mut child = process::command(&self.program, &self.args, &env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Failure::Handler(format!("starting {}: {e}", self.program)))?;
        let stdin = child.stdin.take();
        let body = message.body.clone();
        // Written on its own task: a command that prints before it reads all its input must
        // not deadlock against a full pipe.
        let writer = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A command that exits without reading its input is not an error.
                let _ = stdin.write_all(&body).await;
            }
        });
        let limit = self.timeout;
        let outcome = tokio::time::timeout(limit, self.collect(&mut child)).await;
        writer.abort();
        match outcome {
            Ok(result) => result,
            Err(_) => {
                let _ = child.kill().await;
                Err(Failure::Handler(format!(
                    "{} ran longer than {limit:?}",
                    self.program
                )))
            }
        }
    }

    /// Reads the command's output (at most `max_output` octets) and waits for its exit.
    async fn collect(&self, child: &mut tokio::process::Child) -> Result<Bytes, Failure> {
        let program = &self.program;
        let mut output = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let cap = u64::try_from(self.max_output)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            stdout
                .take(cap)
                .read_to_end(&mut output)
                .await
                .map_err(|e| Failure::Handler(format!("reading {program}'s output: {e}")))?;
        }
        if output.len() > self.max_output {
            let _ = child.kill().await;
            return Err(Failure::Handler(format!(
                "{program} printed more than max_output_bytes ({})",
                self.max_output
            )));
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Failure::Handler(format!("running {program}: {e}")))?;
        if status.success() {
            Ok(output.into())
        } else {
            Err(Failure::Handler(format!("{program} failed: {status}")))
        }
    }

    async fn handle(&self, message: Message, handle: &MessageHandle) -> Result<(), Failure> {
        let stdout = self.run(&message).await?;
        if self.consumer.rpc && !is_envelope(&stdout) {
            return Err(Failure::Handler(
                "output is not the JSON envelope {\"success\", \"data\", \"message\"}".to_owned(),
            ));
        }
        if let Some(reply_to) = reply_to(&message.properties) {
            if self.consumer.reply_allowed(reply_to) {
                let props = BasicProperties {
                    content_type: message.properties.content_type.clone(),
                    ..Default::default()
                };
                handle
                    .reply(props, stdout)
                    .await
                    .map_err(|e| Failure::Handler(e.0))?;
            } else {
                tracing::warn!(consumer = %self.consumer.name, reply_to, "reply_to is not a reply queue this consumer may answer to (reply_queues); output dropped");
            }
        }
        handle.ack().await.map_err(|e| Failure::Handler(e.0))
    }
}

impl DynHandler for CommandHandler {
    fn consume<'a>(
        &'a mut self,
        message: Message,
        handle: &'a MessageHandle,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(self.handle(message, handle))
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// True for `{"success": bool, "data": {...}, "message": string or null}`.
fn is_envelope(output: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(output) else {
        return false;
    };
    map.len() == 3
        && map
            .get("success")
            .is_some_and(serde_json::Value::is_boolean)
        && map.get("data").is_some_and(serde_json::Value::is_object)
        && map
            .get("message")
            .is_some_and(|m| m.is_string() || m.is_null())
}

/// The environment a command sees for a message.
fn environment(message: &Message) -> Vec<(String, String)> {
    let p = &message.properties;
    let mut env = vec![
        ("AMQP_EXCHANGE".to_owned(), message.exchange.clone()),
        ("AMQP_ROUTING_KEY".to_owned(), message.routing_key.clone()),
        (
            "AMQP_REDELIVERED".to_owned(),
            message.redelivered.to_string(),
        ),
    ];
    for (name, value) in string_properties(p) {
        if let Some(text) = value.and_then(|v| v.to_str().ok()) {
            env.push((format!("AMQP_{}", name.to_uppercase()), text.to_owned()));
        }
    }
    for (name, value) in number_properties(p) {
        if let Some(n) = value {
            env.push((format!("AMQP_{}", name.to_uppercase()), n.to_string()));
        }
    }
    for (name, value) in p.headers.iter().flat_map(|h| h.iter()) {
        let text = match value {
            FieldValue::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            other => other
                .as_str()
                .map(str::to_owned)
                .or_else(|| other.as_i64().map(|n| n.to_string())),
        };
        if let Some(text) = text {
            env.push((header_variable(&name.to_string()), text));
        }
    }
    env
}

fn header_variable(name: &str) -> String {
    let mut variable = String::from("AMQP_HEADER_");
    variable.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    variable
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_client::ShortStr;

    #[test]
    fn envelopes() {
        assert!(is_envelope(br#"{"success":true,"data":{},"message":null}"#));
        assert!(!is_envelope(
            br#"{"success":true,"data":null,"message":null}"#
        ));
        assert!(!is_envelope(b"plain text"));
    }

    #[test]
    fn properties_and_headers_become_variables() {
        let mut headers = amqp_client::FieldTable::new();
        headers.insert("customer-id", "c42");
        headers.insert("attempt", 3i32);
        headers.insert("nested", amqp_client::FieldTable::new());
        let message = Message {
            body: Bytes::new(),
            properties: BasicProperties {
                content_type: Some(ShortStr::from_static("text/plain")),
                delivery_mode: Some(2),
                headers: Some(headers),
                ..Default::default()
            },
            exchange: "ex".into(),
            routing_key: "a.b".into(),
            redelivered: true,
        };
        let env = environment(&message);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("AMQP_ROUTING_KEY"), Some("a.b"));
        assert_eq!(get("AMQP_REDELIVERED"), Some("true"));
        assert_eq!(get("AMQP_CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("AMQP_DELIVERY_MODE"), Some("2"));
        assert_eq!(get("AMQP_HEADER_CUSTOMER_ID"), Some("c42"));
        assert_eq!(get("AMQP_HEADER_ATTEMPT"), Some("3"));
        assert_eq!(get("AMQP_HEADER_NESTED"), None);
        assert_eq!(get("AMQP_REPLY_TO"), None);
    }

    fn consumer(extra: &str) -> Arc<ConsumerConfig> {
        let yaml = format!("consumers:\n  - {{ command: [x], queue: q{extra} }}\n");
        let config = super::super::Config::parse(&yaml, []).unwrap();
        Arc::new(config.consumers[0].clone())
    }

    fn sh(script: &str, extra: &str, env: Vec<(String, String)>) -> CommandHandler {
        let command = ["sh".into(), "-c".into(), script.into()];
        CommandHandler::new(&command, consumer(extra), env)
    }

    fn failure(outcome: Result<Bytes, Failure>) -> String {
        match outcome.unwrap_err() {
            Failure::Handler(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stdout_exit_status_timeout_and_output_cap() {
        let mut message = Message {
            body: Bytes::from_static(b"hello"),
            properties: BasicProperties::default(),
            exchange: String::new(),
            routing_key: "rk".into(),
            redelivered: false,
        };
        let path = process::handler_env(&Default::default(), &Default::default());
        let out = sh(
            "tr a-z A-Z; printf \" $AMQP_ROUTING_KEY\"",
            "",
            path.clone(),
        )
        .run(&message)
        .await;
        assert_eq!(out.unwrap(), Bytes::from_static(b"HELLO rk"));
        let failed = failure(sh("exit 3", "", path.clone()).run(&message).await);
        assert!(failed.contains("exit status: 3"), "{failed}");
        let slow = sh("sleep 5", ", command_timeout_ms: 100", path.clone())
            .run(&message)
            .await;
        assert!(failure(slow).contains("ran longer than"));
        let loud = sh("yes", ", max_output_bytes: 1000", path.clone())
            .run(&message)
            .await;
        assert!(failure(loud).contains("more than max_output_bytes (1000)"));
        let missing = CommandHandler::new(&["/no/such/program".into()], consumer(""), vec![])
            .run(&message)
            .await;
        assert!(failure(missing).starts_with("starting /no/such/program"));
        let mut headers = amqp_client::FieldTable::new();
        headers.insert("evil", "a\0b");
        message.properties.headers = Some(headers);
        let nul = sh("cat", "", path).run(&message).await.unwrap_err();
        assert!(
            matches!(&nul, Failure::Undeliverable(m) if m.contains("AMQP_HEADER_EVIL")),
            "{nul:?}"
        );
    }
}
