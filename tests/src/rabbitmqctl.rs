//! Driving the broker behind `AMQP_URL` with `rabbitmqctl`, for the tests that raise alarms or
//! close connections from the broker's side.
//!
//! The command line comes from the environment variable `RABBITMQCTL` (default `rabbitmqctl`,
//! the system's), so any node can be driven: `scripts/rabbitmq4 up` prints the one for its
//! RabbitMQ 4 node (`chroot ROOT env ... rabbitmqctl -n rmq4@localhost`), and for a container
//! it is `docker exec CONTAINER rabbitmqctl`. It is read by `sh`, which runs it with the
//! arguments appended, so it may quote words as a shell would. It must reach the same node
//! that `AMQP_URL` does: a test that closes connections fails loudly when the node does not
//! know them.

use std::process::{Command, Stdio};
use std::time::Duration;

/// How long one `rabbitmqctl` call may take (they take about a second).
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// Why a `rabbitmqctl` call failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// `sh` (or `timeout`) could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line, from `RABBITMQCTL`.
        command: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The command ran and failed (or took longer than its limit, 60 s).
    #[error(
        "`{command} {args}` failed ({status}): {output}\n(RABBITMQCTL must drive the node behind \
         AMQP_URL; scripts/ensure-rabbitmq prints it for the nodes it starts)"
    )]
    Failed {
        /// The command line, from `RABBITMQCTL`.
        command: String,
        /// The arguments, joined by spaces.
        args: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed, stdout then stderr.
        output: String,
    },
}

/// The command line that runs `rabbitmqctl` against the broker: `RABBITMQCTL`, or
/// `rabbitmqctl`.
pub fn command() -> String {
    std::env::var("RABBITMQCTL")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "rabbitmqctl".to_owned())
}

/// Runs `RABBITMQCTL args...`, at most 60 s, and returns what it printed on stdout.
///
/// # Errors
/// [`CtlError`] when it cannot be started, fails or runs out of time.
pub fn run(args: &[&str]) -> Result<String, CtlError> {
    let command = command();
    let output = Command::new("timeout")
        .arg(CALL_LIMIT.as_secs().to_string())
        .args(["sh", "-c", &format!("{command} \"$@\""), "rabbitmqctl"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CtlError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(CtlError::Failed {
        command,
        args: args.join(" "),
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Closes, from the broker's side, the connections whose client gave `name` as its
/// `connection_name`, with `reason`; returns how many there were. A connection that went away
/// in the meantime counts and is no error.
///
/// # Panics
/// When the connections cannot be listed: the test needs a working `RABBITMQCTL`.
pub fn close_connections_named(name: &str, reason: &str) -> usize {
    let listed = run(&["-s", "list_connections", "pid", "client_properties"])
        .unwrap_or_else(|e| panic!("listing the broker's connections: {e}"));
    // RabbitMQ keeps the name as the `connection_name` client property.
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(&wanted))
        .filter_map(|line| line.split('\t').next())
        .collect();
    for pid in &pids {
        if let Err(e) = run(&["-q", "close_connection", pid, reason]) {
            eprintln!("close_connection {pid} failed (it may be gone already): {e}");
        }
    }
    pids.len()
}
