//! External command handlers: one process per message.
//!
//! ```text
//! stdin    the body
//! env      AMQP_EXCHANGE, AMQP_ROUTING_KEY, AMQP_REDELIVERED (true/false), and each property
//!          that is set: AMQP_CONTENT_TYPE, AMQP_CONTENT_ENCODING, AMQP_DELIVERY_MODE,
//!          AMQP_PRIORITY, AMQP_CORRELATION_ID, AMQP_REPLY_TO, AMQP_EXPIRATION,
//!          AMQP_MESSAGE_ID, AMQP_TIMESTAMP, AMQP_TYPE, AMQP_USER_ID, AMQP_APP_ID; each header
//!          with a string or integer value as AMQP_HEADER_<NAME> (upper case, other than
//!          letters and digits as _)
//! exit 0   ack; stdout is published to reply_to with the correlation id, when there is one
//! exit ≠ 0 the message is requeued and the instance replaced after the consumer's pause
//! ```

use std::process::Stdio;
use std::time::Duration;

use amqp_client::{BasicProperties, FieldValue, ShortStr};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::handler::{Handler, HandlerError, Message, MessageHandle};

/// Runs a command per message (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct CommandHandler {
    program: String,
    args: Vec<String>,
    timeout: Option<Duration>,
}

impl CommandHandler {
    /// `command[0]` is the program, the rest its arguments.
    pub(crate) fn new(command: &[String], timeout: Option<Duration>) -> Self {
        let (program, args) = command.split_first().map_or_else(
            || (String::new(), Vec::new()),
            |(p, a)| (p.clone(), a.to_vec()),
        );
        Self {
            program,
            args,
            timeout,
        }
    }

    async fn run(&self, message: &Message) -> Result<Bytes, HandlerError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(environment(message))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HandlerError(format!("starting {}: {e}", self.program)))?;
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
        let output = child.wait_with_output();
        let output = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, output)
                .await
                .map_err(|_| HandlerError(format!("{} ran longer than {limit:?}", self.program)))?,
            None => output.await,
        }
        .map_err(|e| HandlerError(format!("running {}: {e}", self.program)))?;
        let _ = writer.await;
        if output.status.success() {
            Ok(output.stdout.into())
        } else {
            Err(HandlerError(format!(
                "{} failed: {}",
                self.program, output.status
            )))
        }
    }
}

impl Handler for CommandHandler {
    async fn consume(
        &mut self,
        message: Message,
        handle: &MessageHandle,
    ) -> Result<(), HandlerError> {
        let stdout = self.run(&message).await?;
        if message.properties.reply_to.is_some() {
            let props = BasicProperties {
                content_type: message.properties.content_type.clone(),
                ..Default::default()
            };
            handle.reply(props, stdout).await?;
        }
        handle.ack().await
    }
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
    let strings: [(&str, &Option<ShortStr>); 10] = [
        ("AMQP_CONTENT_TYPE", &p.content_type),
        ("AMQP_CONTENT_ENCODING", &p.content_encoding),
        ("AMQP_CORRELATION_ID", &p.correlation_id),
        ("AMQP_REPLY_TO", &p.reply_to),
        ("AMQP_EXPIRATION", &p.expiration),
        ("AMQP_MESSAGE_ID", &p.message_id),
        ("AMQP_TYPE", &p.kind),
        ("AMQP_USER_ID", &p.user_id),
        ("AMQP_APP_ID", &p.app_id),
        ("AMQP_CLUSTER_ID", &p.cluster_id),
    ];
    for (name, value) in strings {
        if let Some(text) = value.as_ref().and_then(|v| v.to_str().ok()) {
            env.push((name.to_owned(), text.to_owned()));
        }
    }
    let numbers = [
        ("AMQP_DELIVERY_MODE", p.delivery_mode.map(u64::from)),
        ("AMQP_PRIORITY", p.priority.map(u64::from)),
        ("AMQP_TIMESTAMP", p.timestamp),
    ];
    for (name, value) in numbers {
        if let Some(n) = value {
            env.push((name.to_owned(), n.to_string()));
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

    #[tokio::test]
    async fn stdout_exit_status_and_timeout() {
        let message = Message {
            body: Bytes::from_static(b"hello"),
            properties: BasicProperties::default(),
            exchange: String::new(),
            routing_key: "rk".into(),
            redelivered: false,
        };
        let sh = |script: &str, timeout| {
            CommandHandler::new(&["sh".into(), "-c".into(), script.into()], timeout)
        };
        let out = sh("tr a-z A-Z; printf \" $AMQP_ROUTING_KEY\"", None)
            .run(&message)
            .await;
        assert_eq!(out.unwrap(), Bytes::from_static(b"HELLO rk"));
        let failed = sh("exit 3", None).run(&message).await.unwrap_err();
        assert!(failed.0.contains("exit status: 3"), "{failed}");
        let slow = sh("sleep 5", Some(Duration::from_millis(100)))
            .run(&message)
            .await;
        assert!(slow.unwrap_err().0.contains("ran longer than"));
        let missing = CommandHandler::new(&["/no/such/program".into()], None)
            .run(&message)
            .await;
        assert!(
            missing
                .unwrap_err()
                .0
                .starts_with("starting /no/such/program")
        );
    }
}
