//! `consume --exec CMD`: runs `sh -c CMD` once per message, the body on its standard input
//! and the message's envelope and properties in `AMQP_*` environment variables; its exit
//! status decides what becomes of the message.
//!
//! | exit status | the message is |
//! |---|---|
//! | 0 | acknowledged |
//! | 75 (`EX_TEMPFAIL`), killed by a signal, or past `--exec-timeout` | requeued (nack) |
//! | anything else | rejected (dead-lettered when the queue has a dead-letter exchange) |
//!
//! Variables: `AMQP_EXCHANGE`, `AMQP_ROUTING_KEY`, `AMQP_REDELIVERED`, `AMQP_DELIVERY_TAG`,
//! `AMQP_BODY_SIZE`, one `AMQP_<PROPERTY>` per property the message has (`AMQP_CONTENT_TYPE`,
//! `AMQP_CORRELATION_ID`, `AMQP_TIMESTAMP`, ...; unset when it has none) and `AMQP_HEADERS`,
//! the headers as `consume --json` prints them.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use amqp_client::Delivery;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::error::{CliError, Result};
use crate::json::{headers_json, properties_json, short_json};

/// The exit status that asks for the message to be requeued (sysexits' `EX_TEMPFAIL`).
pub const EXIT_REQUEUE: i32 = 75;

/// What becomes of a message after its command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// `basic.ack`
    Ack,
    /// `basic.nack` with requeue
    Requeue,
    /// `basic.reject` without requeue
    Reject,
}

impl Verdict {
    /// The verdict for a command's exit status.
    pub(super) fn of(status: ExitStatus) -> Self {
        match status.code() {
            Some(0) => Self::Ack,
            Some(EXIT_REQUEUE) | None => Self::Requeue,
            Some(_) => Self::Reject,
        }
    }
}

/// The command and how long it may run.
#[derive(Debug, Clone)]
pub(super) struct Exec {
    pub(super) command: String,
    pub(super) timeout: Duration,
}

impl Exec {
    /// Runs the command for `delivery` and says what to do with it. A command that runs past
    /// the timeout is killed (and so is it when this future is dropped).
    ///
    /// # Errors
    /// [`CliError::Exec`] when the shell cannot be started.
    pub(super) async fn run(&self, delivery: &Delivery) -> Result<Verdict> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in environment(delivery) {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command.spawn().map_err(|source| CliError::Exec {
            command: self.command.clone(),
            source,
        })?;
        let stdin = child.stdin.take();
        let body = delivery.body.clone();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input closes the pipe: not an error.
                let _ = stdin.write_all(&body).await;
            }
        };
        let ran = async {
            let ((), status) = tokio::join!(feed, child.wait());
            status
        };
        let tag = delivery.delivery_tag.0;
        let outcome = tokio::time::timeout(self.timeout, ran).await;
        match outcome {
            Ok(Ok(status)) => Ok(self.judged(tag, status)),
            Ok(Err(source)) => Err(CliError::Exec {
                command: self.command.clone(),
                source,
            }),
            Err(_) => {
                let _ = child.kill().await;
                eprintln!(
                    "amqp: --exec ran longer than {:?} for delivery {tag}; killed, message requeued",
                    self.timeout
                );
                Ok(Verdict::Requeue)
            }
        }
    }

    /// The verdict for `status`, said on standard error unless the message is acknowledged.
    fn judged(&self, tag: u64, status: ExitStatus) -> Verdict {
        let verdict = Verdict::of(status);
        match verdict {
            Verdict::Ack => {}
            Verdict::Requeue => eprintln!("amqp: --exec {status} for delivery {tag}: requeued"),
            Verdict::Reject => eprintln!("amqp: --exec {status} for delivery {tag}: rejected"),
        }
        verdict
    }
}

/// Each `AMQP_*` variable for `delivery`, `None` for one to unset (a property it lacks, so
/// that nothing is inherited from the calling shell under that name).
fn environment(delivery: &Delivery) -> Vec<(String, Option<String>)> {
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let mut env = vec![
        (
            "AMQP_EXCHANGE".to_owned(),
            Some(text(short_json(&delivery.exchange))),
        ),
        (
            "AMQP_ROUTING_KEY".to_owned(),
            Some(text(short_json(&delivery.routing_key))),
        ),
        (
            "AMQP_REDELIVERED".to_owned(),
            Some(delivery.redelivered.to_string()),
        ),
        (
            "AMQP_DELIVERY_TAG".to_owned(),
            Some(delivery.delivery_tag.0.to_string()),
        ),
        (
            "AMQP_BODY_SIZE".to_owned(),
            Some(delivery.body.len().to_string()),
        ),
        (
            "AMQP_HEADERS".to_owned(),
            Some(headers_json(&delivery.properties).to_string()),
        ),
    ];
    if let Value::Object(properties) = properties_json(&delivery.properties) {
        for (name, value) in properties {
            let value = (!value.is_null()).then(|| text(value));
            env.push((format!("AMQP_{}", name.to_uppercase()), value));
        }
    }
    // An environment value cannot hold NUL; a short string can.
    for (_, value) in &mut env {
        if let Some(v) = value.as_mut().filter(|v| v.contains('\0')) {
            *v = v.replace('\0', "\u{FFFD}");
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn the_exit_status_decides() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(Verdict::of(exited(0)), Verdict::Ack);
        assert_eq!(Verdict::of(exited(EXIT_REQUEUE)), Verdict::Requeue);
        assert_eq!(Verdict::of(exited(1)), Verdict::Reject);
        assert_eq!(Verdict::of(exited(2)), Verdict::Reject);
        // Killed by SIGTERM.
        assert_eq!(Verdict::of(ExitStatus::from_raw(15)), Verdict::Requeue);
    }
}
