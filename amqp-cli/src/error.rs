//! The command line's errors: each prints as one line a person can act on (which host, which
//! queue, which reply code and what it means).

use std::path::PathBuf;
use std::time::Duration;

use amqp_client::{ConnectionError, ReplyCode};

/// Everything a subcommand can fail with. `main` prints it as `amqp: error: {self}` and exits
/// with status 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// `--url` / `AMQP_URL` cannot be used.
    #[error("invalid broker URL: {0}")]
    Url(#[source] amqp_client::Error),
    /// No connection could be made.
    #[error("cannot connect to {host}: {}", explain(.source))]
    Connect {
        /// The `host:port` list of the URL.
        host: String,
        /// Why.
        source: amqp_client::Error,
    },
    /// The broker refused an operation, or the connection failed during it.
    #[error("{action} on {host} failed: {}", explain(.source))]
    Broker {
        /// What was being done, naming the queue or exchange.
        action: String,
        /// The broker's `host:port`.
        host: String,
        /// Why.
        source: amqp_client::Error,
    },
    /// An input file (message body, capture) could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output file could not be created.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Standard output or error could not be written (a closed pipe is not reported).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// Publishes the broker did not confirm (`--confirm`) or returned (`--mandatory`).
    #[error("{failed} of {total} messages were not taken by {host}: {detail}")]
    NotConfirmed {
        /// How many failed.
        failed: u64,
        /// How many were published.
        total: u64,
        /// The broker's `host:port`.
        host: String,
        /// The first failure, spelled out.
        detail: String,
    },
    /// `rpc` got no reply in time.
    #[error("no reply to {request} within {after:?} (is a consumer serving that routing key?)")]
    NoReply {
        /// The exchange and routing key the request went to.
        request: String,
        /// How long it waited.
        after: Duration,
    },
    /// `consume --count N --timeout S` got fewer than N messages in time.
    #[error("got {got} of {want} messages from queue {queue:?} within {after:?}")]
    TooFew {
        /// The queue.
        queue: String,
        /// How many arrived.
        got: u64,
        /// How many were asked for.
        want: u64,
        /// The timeout.
        after: Duration,
    },
    /// `decode` met malformed frames (each was reported on standard error with its offset).
    #[error("{errors} malformed or truncated frame(s) in {input}")]
    Malformed {
        /// How many errors.
        errors: usize,
        /// The input's name.
        input: String,
    },
    /// A text flag longer than a short string can hold.
    #[error("--{flag} is {len} octets long; at most 255 fit")]
    TooLong {
        /// The flag, without its dashes.
        flag: &'static str,
        /// Its length.
        len: usize,
    },
    /// `consume --exec`: the command could not be run.
    #[error("cannot run --exec {command:?}: {source}")]
    Exec {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// Options that do not make sense together.
    #[error("{0}")]
    Usage(&'static str),
}

/// The result of every subcommand.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// True for an output error from a closed pipe (`amqp consume | head`): not an error to
    /// report.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Writes `text` and a line end to standard output, as `println!` does, but a closed pipe or
/// a full disk is an error rather than a panic.
///
/// # Errors
/// [`CliError::Output`] when standard output cannot be written.
pub fn say(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// What a reply code means, for a person.
pub fn meaning(code: ReplyCode) -> &'static str {
    match code.0 {
        200 => "closed normally",
        311 => "the message is too large",
        312 => "no queue is bound for this exchange and routing key",
        313 => "no consumer could take it at once",
        320 => "an operator or a broker shutdown closed the connection",
        402 => "an invalid path",
        403 => {
            "access refused: check the user's permissions; names starting with amq. are reserved"
        }
        404 => "the queue or exchange does not exist",
        405 => "another connection holds this queue exclusively",
        406 => {
            "a precondition failed: it exists with other properties or arguments, or a condition such as if-empty does not hold"
        }
        501..=505 => "the broker saw a protocol error (a bug in this client)",
        506 => "the broker ran out of a resource",
        530 => "not allowed: the user may not use this virtual host, or the name is in use",
        540 => "the broker does not implement this",
        541 => "an internal error in the broker",
        _ => "an unknown reply code",
    }
}

/// One line that says why a client call failed: the reply code, its name, the broker's text
/// and what the code means; or the socket error; or the timeout.
pub fn explain(e: &amqp_client::Error) -> String {
    if let Some(code) = e.reply_code() {
        let text = e.reply_text().unwrap_or_default();
        // RabbitMQ's texts start with the code's name ("NOT_FOUND - no queue 'x' ..."), which
        // the code already says.
        let text = code
            .name()
            .and_then(|name| text.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix(" - "))
            .unwrap_or(text);
        let meaning = match e {
            amqp_client::Error::Connection(ConnectionError::AuthenticationFailed(_)) => {
                "login refused: a wrong user name or password, or guest connecting from another host"
            }
            amqp_client::Error::Connection(ConnectionError::VhostRefused(_)) => {
                "the virtual host does not exist, or the user has no permissions on it"
            }
            _ => meaning(code),
        };
        return if text.is_empty() {
            format!("{code} ({meaning})")
        } else {
            format!("{code}: {text} ({meaning})")
        };
    }
    match e {
        amqp_client::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused; is RabbitMQ running there?".to_owned()
        }
        amqp_client::Error::Io(io) => io.to_string(),
        amqp_client::Error::Timeout { operation, after } => {
            format!("no answer to {operation} within {after:?}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_error_says_what_happened() {
        let refused =
            amqp_client::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = CliError::Connect {
            host: "127.0.0.1:1".into(),
            source: refused,
        };
        let line = e.to_string();
        assert!(
            line.starts_with("cannot connect to 127.0.0.1:1: connection refused"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn every_spec_code_has_a_meaning() {
        for code in [
            200, 311, 312, 313, 320, 402, 403, 404, 405, 406, 501, 506, 530, 540, 541,
        ] {
            assert_ne!(meaning(ReplyCode(code)), "an unknown reply code", "{code}");
        }
    }
}
