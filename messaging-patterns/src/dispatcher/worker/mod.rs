//! Python consumers (`consumer: module:Class`): one long-lived worker process per instance,
//! running the adapter shipped in `messaging-patterns/python/`, spoken to over its stdin and
//! stdout one JSON line at a time (docs/dispatcher-worker-protocol.md).
//!
//! ```text
//! start     python3 -c ADAPTER [--startup module:function] module:Class   (clean env)
//!           ← ready                      (or ← fatal: import or startup failed)
//! message   → message {id, body, properties, delivery_info}
//!           ← ack / nack / reject {id}   settled at once, on the consumer's channel
//!           ← publish {id, ...}          → published / publish_failed {error}
//!           ← done {id}                  acked if the class left it unsettled
//!           ← failed {id, error}         the class raised: on_failure; the worker has
//!                                        called shutdown(exception) and made a new instance
//! stop      → shutdown                   the worker calls shutdown(None) and exits
//! ```
//!
//! A worker that dies, breaks the protocol, or takes longer than `command_timeout_ms` with a
//! message is killed; the message fails, and the next one starts a new worker (which has
//! 60 s to send `ready`, apart from the message's time).

mod wire;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::handler::{BoxFuture, DynHandler, Failure, Message, MessageHandle};
use super::process::{self, read_line};
use wire::FromWorker;

/// The adapter, run with `python3 -c`.
pub(crate) const ADAPTER: &str = include_str!("../../../python/amqp_dispatcher_worker.py");

/// How long a worker may take to stop after `shutdown`, or `--check` to import.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker may take to start (import its class, run the startup handler).
const START_TIMEOUT: Duration = Duration::from_secs(60);
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// What starts a consumer's workers.
#[derive(Clone, Debug)]
pub(crate) struct WorkerSpec {
    /// The interpreter.
    pub(crate) python: String,
    /// `module:Class`.
    pub(crate) class: String,
    /// `module:function`, run first.
    pub(crate) startup: Option<String>,
    /// The whole environment of the process.
    pub(crate) env: Vec<(String, String)>,
    /// The longest one message may take.
    pub(crate) timeout: Duration,
    /// The longest line a worker may send.
    pub(crate) max_line: usize,
}

/// One consumer instance: a worker process, started on the first message.
#[derive(Debug)]
pub(crate) struct PythonWorker {
    spec: Arc<WorkerSpec>,
    process: Option<Process>,
    next_id: u64,
}

#[derive(Debug)]
struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// How one exchange with the worker ended badly.
enum Broken {
    /// The class raised; the worker goes on.
    Raised(String),
    /// The worker is unusable: it is killed.
    Dead(String),
}

impl PythonWorker {
    pub(crate) fn new(spec: Arc<WorkerSpec>) -> Self {
        Self {
            spec,
            process: None,
            next_id: 0,
        }
    }

    fn arguments(&self) -> Vec<String> {
        let mut args = vec!["-c".to_owned(), ADAPTER.to_owned()];
        if let Some(startup) = &self.spec.startup {
            args.extend(["--startup".to_owned(), startup.clone()]);
        }
        args.push(self.spec.class.clone());
        args
    }

    /// Starts the worker and waits for its `ready`.
    async fn start(&self) -> Result<Process, Broken> {
        let mut child = process::command(&self.spec.python, &self.arguments(), &self.spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Broken::Dead(format!("starting {}: {e}", self.spec.python)))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Broken::Dead("the worker's pipes are missing".to_owned()));
        };
        let mut process = Process {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        match process.receive(self.spec.max_line).await? {
            FromWorker::Ready { pid } => {
                tracing::debug!(class = %self.spec.class, ?pid, "python worker ready");
                Ok(process)
            }
            FromWorker::Fatal { error } => {
                Err(Broken::Dead(format!("worker failed to start: {error}")))
            }
            other => Err(Broken::Dead(format!("worker sent {other:?} before ready"))),
        }
    }

    async fn handle(&mut self, message: Message, handle: &MessageHandle) -> Result<(), Failure> {
        if self.process.is_none() {
            // Starting (imports, startup handler) is not the message's time.
            let started = tokio::time::timeout(START_TIMEOUT, self.start()).await;
            self.process = Some(match started {
                Ok(Ok(process)) => process,
                Ok(Err(Broken::Dead(e) | Broken::Raised(e))) => return Err(Failure::Handler(e)),
                Err(_) => {
                    let e = format!("the worker did not start within {START_TIMEOUT:?}");
                    return Err(Failure::Handler(e));
                }
            });
        }
        let limit = self.spec.timeout;
        let outcome = tokio::time::timeout(limit, self.exchange(message, handle)).await;
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Broken::Raised(error))) => return Err(Failure::Handler(error)),
            Ok(Err(Broken::Dead(error))) => error,
            Err(_) => format!("{} ran longer than {limit:?}", self.spec.class),
        };
        if let Some(mut process) = self.process.take() {
            let _ = process.child.kill().await;
        }
        Err(Failure::Handler(error))
    }

    async fn exchange(&mut self, message: Message, handle: &MessageHandle) -> Result<(), Broken> {
        let Some(process) = self.process.as_mut() else {
            return Err(Broken::Dead("no worker".to_owned()));
        };
        self.next_id += 1;
        let id = self.next_id;
        let tag = handle.delivery().delivery_tag.0;
        process.send(&wire::message_line(id, &message, tag)).await?;
        loop {
            let line = process.receive(self.spec.max_line).await?;
            if line.id().is_some_and(|got| got != id) {
                return Err(Broken::Dead(format!(
                    "worker answered about another message: {line:?}"
                )));
            }
            match line {
                FromWorker::Done { .. } => return Ok(()),
                FromWorker::Failed { error, .. } => return Err(Broken::Raised(error)),
                FromWorker::Fatal { error } => return Err(Broken::Dead(error)),
                FromWorker::Ready { .. } => {
                    return Err(Broken::Dead("worker sent ready twice".to_owned()));
                }
                settle_or_publish => process.serve(settle_or_publish, handle).await?,
            }
        }
    }

    async fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let _ = process.send(&serde_json::json!({"type": "shutdown"})).await;
        drop(process.stdin);
        match tokio::time::timeout(STOP_TIMEOUT, process.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                tracing::warn!(class = %self.spec.class, %status, "python worker exited badly on shutdown")
            }
            Ok(Err(e)) => {
                tracing::warn!(class = %self.spec.class, error = %e, "waiting for a python worker")
            }
            Err(_) => {
                tracing::warn!(class = %self.spec.class, "python worker did not stop in time; killed");
                let _ = process.child.kill().await;
            }
        }
    }
}

impl Process {
    async fn send(&mut self, line: &serde_json::Value) -> Result<(), Broken> {
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.stdin
            .write_all(&bytes)
            .await
            .map_err(|e| Broken::Dead(format!("writing to the worker: {e}")))
    }

    async fn receive(&mut self, max: usize) -> Result<FromWorker, Broken> {
        let line = read_line(&mut self.stdout, max)
            .await
            .map_err(|e| Broken::Dead(format!("worker line: {e}")))?;
        let Some(line) = line else {
            let status = self.child.wait().await.map(|s| s.to_string());
            return Err(Broken::Dead(format!(
                "worker exited ({})",
                status.unwrap_or_else(|e| e.to_string())
            )));
        };
        serde_json::from_slice(&line)
            .map_err(|e| Broken::Dead(format!("worker sent a bad line: {e}")))
    }

    /// Settles or publishes as the worker asks.
    async fn serve(&mut self, line: FromWorker, handle: &MessageHandle) -> Result<(), Broken> {
        let settled = match line {
            FromWorker::Ack { .. } => handle.ack().await,
            FromWorker::Nack { requeue, .. } => handle.nack(requeue).await,
            FromWorker::Reject { requeue, .. } => handle.reject(requeue).await,
            FromWorker::Publish {
                exchange,
                routing_key,
                headers,
                properties,
                body,
                ..
            } => {
                let reply = match BASE64.decode(body.as_bytes()) {
                    Ok(body) => {
                        let props = wire::publish_properties(&headers, &properties);
                        handle
                            .publish(&exchange, &routing_key, false, props, body.into())
                            .await
                    }
                    Err(e) => Err(super::HandlerError(format!("body is not base64: {e}"))),
                };
                let line = match reply {
                    Ok(()) => serde_json::json!({"type": "published"}),
                    Err(e) => serde_json::json!({"type": "publish_failed", "error": e.0}),
                };
                return self.send(&line).await;
            }
            _ => return Ok(()),
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "could not settle as the worker asked");
        }
        Ok(())
    }
}

impl DynHandler for PythonWorker {
    fn consume<'a>(
        &'a mut self,
        message: Message,
        handle: &'a MessageHandle,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(self.handle(message, handle))
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.stop())
    }

    fn self_replacing(&self) -> bool {
        true
    }
}

/// Imports each class and the startup handler in a worker (`--check`), with the same
/// interpreter and environment as a run; the worker's complaints when one does not load.
pub(crate) async fn check(
    python: &str,
    classes: &[&str],
    startup: Option<&str>,
    env: &[(String, String)],
) -> Result<(), String> {
    let mut args = vec!["-c".to_owned(), ADAPTER.to_owned(), "--check".to_owned()];
    if let Some(startup) = startup {
        args.extend(["--startup".to_owned(), startup.to_owned()]);
    }
    args.extend(classes.iter().map(|c| (*c).to_owned()));
    let run = process::command(python, &args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let output = tokio::time::timeout(CHECK_TIMEOUT, run)
        .await
        .map_err(|_| format!("importing the Python consumers took longer than {CHECK_TIMEOUT:?}"))?
        .map_err(|e| format!("starting {python}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
