//! The one task per connection that owns the socket and the engine.
//!
//! It only moves bytes and wakes tasks: bytes read go to the engine, bytes the engine emits go
//! to the socket (vectored, published bodies by reference), commands from handles go to the
//! engine, and the engine's events go to whoever waits for them ([`Router`]). Reads and writes
//! are both `select!` arms, so a broker flooding deliveries while we publish cannot deadlock.
//!
//! ```text
//!  connect round ──► session (one socket, one engine) ──► lost ──► recovery on? ──► round …
//!  (endpoints shuffled;        │                                     │ no: the end
//!   backoff between rounds)    └── closed by the application ──► the end
//! ```

use std::sync::Arc;
use std::time::Duration;

use amqp_wire::connection::ConnectionError;
use tokio::sync::mpsc;

use crate::command::Command;
use crate::config::{ConnectionConfig, Endpoint, Io};
use crate::error::{Error, Result};
use crate::router::Router;
use crate::session::Session;

pub(crate) struct Driver {
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) router: Router,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let mut endpoints = shuffled(&self.config.endpoints);
        let mut next = 0;
        let mut round = 0u32;
        let mut last: Option<Error> = None;
        let mut final_error = None;
        loop {
            if next == endpoints.len() {
                // A whole round failed.
                let error = last
                    .take()
                    .unwrap_or(Error::Config(crate::ConfigError::NoHost));
                if !self.router.ever_connected() || !self.config.recovery.enabled {
                    self.router.give_up(error);
                    break;
                }
                round += 1;
                if self
                    .config
                    .recovery
                    .max_rounds
                    .is_some_and(|max| round >= max)
                {
                    self.router.give_up(error);
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff(&self.config.recovery, round)) => {}
                    () = self.abandoned() => {
                        final_error = Some(closed_while_down());
                        break;
                    }
                }
                endpoints = shuffled(&self.config.endpoints);
                next = 0;
            }
            let endpoint = endpoints[next].clone();
            next += 1;
            self.router.reconnecting(round, &endpoint);
            let attempt = tokio::time::timeout(
                self.config.connection_timeout,
                open(&self.config, &endpoint),
            );
            let attempt = tokio::select! {
                attempt = attempt => attempt,
                () = self.abandoned(), if self.router.ever_connected() => {
                    final_error = Some(closed_while_down());
                    break;
                }
            };
            let session = match attempt {
                Ok(Ok(session)) => session,
                Ok(Err(e)) => {
                    tracing::warn!(host = %endpoint.host, port = endpoint.port, error = %e, "cannot connect");
                    last = Some(e);
                    continue;
                }
                Err(_) => {
                    last = Some(Error::Timeout {
                        operation: "connect",
                        after: self.config.connection_timeout,
                    });
                    continue;
                }
            };
            self.router.session_started(endpoint);
            let error = session.run(&mut self.router, &mut self.commands).await;
            let connected = self.router.session_was_open();
            let error = session_error(error, connected, self.config.connection_timeout);
            if self.router.app_closed() {
                final_error = Some(error);
                break;
            }
            if connected {
                // The connection was up: start a fresh round at once.
                self.router.lost(&error);
                endpoints = shuffled(&self.config.endpoints);
                next = 0;
                round = 0;
                if !self.config.recovery.enabled {
                    self.router.give_up(error);
                    break;
                }
            }
            last = Some(error);
        }
        self.router.finish(final_error);
        // Commands that raced the end fail with the connection's error.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            self.router.refuse(command);
        }
    }

    /// Resolves when the application gave up on the connection while it is down: it called
    /// `close`, or dropped every handle. A recovery then stops rather than reconnecting first
    /// (with the broker unreachable, it would never stop).
    async fn abandoned(&self) {
        let mut close = self.router.conn.close_requested.subscribe();
        loop {
            if *close.borrow_and_update() || self.commands.is_closed() {
                return;
            }
            // Dropping the last handle raises no signal: look again now and then.
            if let Ok(Err(_)) =
                tokio::time::timeout(Duration::from_millis(100), close.changed()).await
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a session ended, as the application sees it: a handshake that outlasted
/// `connection_timeout` is the same error as a TCP or TLS connect that does (the engine's
/// handshake deadline is `connection_timeout`).
fn session_error(error: Error, connected: bool, connection_timeout: Duration) -> Error {
    match error {
        Error::Connection(ConnectionError::HandshakeTimeout) if !connected => Error::Timeout {
            operation: "connect",
            after: connection_timeout,
        },
        error => error,
    }
}

/// How a connection ends when the application closes it (or drops it) while it is down: a
/// clean local close, so `close` succeeds and consumers' streams end without an error.
fn closed_while_down() -> Error {
    Error::Connection(ConnectionError::Closed(
        amqp_wire::connection::CloseReason {
            code: amqp_wire::ReplyCode::SUCCESS,
            text: amqp_wire::ShortStr::from_static("closed by the application while reconnecting"),
            class_id: 0,
            method_id: 0,
            initiator: amqp_wire::connection::Initiator::Local,
        },
    ))
}

/// The configured connector's stream to one endpoint (with TLS over it when configured),
/// and a fresh engine that queued the protocol header.
async fn open(config: &ConnectionConfig, endpoint: &Endpoint) -> Result<Session> {
    let stream = config.connector.connect(endpoint).await?;
    let stream: Box<dyn Io> = match &config.tls {
        None => stream,
        Some(tls) => {
            let connector = crate::tls::connector(tls)?;
            let name = crate::tls::server_name(tls, &endpoint.host)?;
            Box::new(connector.connect(name, stream).await?)
        }
    };
    Ok(Session::new(config, stream))
}

/// The endpoints in a random order, so that many clients spread over a cluster.
fn shuffled(endpoints: &[Endpoint]) -> Vec<Endpoint> {
    let mut list = endpoints.to_vec();
    fastrand::shuffle(&mut list);
    list
}

/// The pause before round `round` (1-based): exponential, capped, with full jitter.
fn backoff(policy: &crate::config::Recovery, round: u32) -> Duration {
    let exp = policy
        .initial_backoff
        .saturating_mul(1u32 << (round - 1).min(16));
    let cap = exp.min(policy.max_backoff);
    cap.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Recovery;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let policy = Recovery {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..100 {
            let first = backoff(&policy, 1);
            assert!(
                first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
                "{first:?}"
            );
            let third = backoff(&policy, 3);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            assert!(backoff(&policy, 40) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn shuffling_keeps_every_endpoint() {
        let endpoints: Vec<Endpoint> = (0..5).map(|i| Endpoint::new("h", 5000 + i)).collect();
        let mut got = shuffled(&endpoints);
        got.sort_by_key(|e| e.port);
        assert_eq!(got, endpoints);
    }
}
