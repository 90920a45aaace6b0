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

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use amqp_wire::Transmit;
use amqp_wire::connection::{Connection as Engine, ConnectionError, State};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::command::Command;
use crate::config::{ConnectionConfig, Endpoint};
use crate::consumer::ConsumerItem;
use crate::error::{Error, Result};
use crate::router::{Parked, Router};

/// Octets the engine may have queued for the socket before the driver stops taking commands:
/// the bound that makes publishers wait when the socket is slow.
const HIGH_WATER: usize = 512 * 1024;
/// Free room the read buffer keeps before each read.
const READ_CHUNK: usize = 64 * 1024;
/// `IoSlice`s handed to one vectored write.
const MAX_SLICES: usize = 64;
/// How long a closed session may go on writing its last octets (a close-ok, say) to a peer
/// that does not read them.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);
/// Commands applied one after the other, without a turn of `select!` between them, when more
/// are already queued: a burst of publishes or acks then costs one wake-up and one vectored
/// write, not one of each per command. Bounded, so reads and writes are never starved.
const COMMAND_BATCH: usize = 64;

/// A byte stream: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One socket and the engine speaking over it.
struct Session {
    engine: Engine,
    /// The engine's clock reads the time elapsed since this instant.
    origin: Instant,
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
}

pub(crate) struct Driver {
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) router: Router,
}

// Carries a command as it came off the queue; see `Command` for why it is not boxed.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Command(Option<Command>),
    Timer,
    Room(std::result::Result<mpsc::OwnedPermit<ConsumerItem>, mpsc::error::SendError<()>>),
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
            let (error, connected) = self.run_session(session).await;
            let error = match error {
                // The handshake outlasted connection_timeout: the same error as a TCP or TLS
                // connect that does (the engine's handshake deadline is connection_timeout).
                Error::Connection(ConnectionError::HandshakeTimeout) if !connected => {
                    Error::Timeout {
                        operation: "connect",
                        after: self.config.connection_timeout,
                    }
                }
                error => error,
            };
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

    /// Runs one socket until its engine is closed and flushed; returns why it ended and
    /// whether the handshake had completed.
    async fn run_session(&mut self, session: Session) -> (Error, bool) {
        let Session {
            mut engine,
            origin,
            mut reader,
            mut writer,
        } = session;
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Transmit::new();
        let mut read_open = true;
        let mut needs_flush = false;
        let mut io_error = None;
        let mut flush_until: Option<Instant> = None;
        // One timer for the session, moved when the engine's deadline moves: a new `Sleep`
        // per turn of the loop would register and cancel a timer entry each time.
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // Commands applied since the last `select!`.
        let mut batch = 0;
        loop {
            // Routing an event may queue frames (a requeue, a recovery step): transmit after
            // each, so nothing waits for the next wake-up. While a delivery is parked, the
            // events after it wait in the engine: one read can hold many deliveries, and only
            // one can be parked.
            let turn = origin.elapsed();
            loop {
                let _ = engine.poll_transmit(turn, &mut out);
                if self.router.parked.is_some() {
                    break;
                }
                let Some(event) = engine.poll_event() else {
                    break;
                };
                self.router.route(event, &mut engine);
            }
            self.router.release_windows();
            let closed = engine.is_closed();
            if closed && out.is_empty() && !needs_flush {
                break;
            }
            if closed {
                // What is left is only worth a bounded wait, and none for a peer that stopped
                // answering: a write blocked on a silent network would never finish.
                let silent = matches!(engine.error(), Some(ConnectionError::MissedHeartbeats(_)));
                let until = *flush_until.get_or_insert_with(|| Instant::now() + FLUSH_LIMIT);
                if silent || Instant::now() >= until {
                    tracing::debug!(unsent = out.len(), "closed session: unsent octets dropped");
                    break;
                }
            }
            let deadline = if closed {
                flush_until
            } else {
                engine.poll_timeout().map(|t| origin + t)
            };
            // A parked delivery stops reading, except while closing: the engine then drops
            // everything but the close-ok, which must not wait for an unread consumer.
            let closing = engine.state() == State::Closing;
            let can_read = read_open && !closed && (self.router.parked.is_none() || closing);
            let take_commands = !self.router.commands_closed()
                && !closed
                && self.router.accepts_commands()
                && out.len() < HIGH_WATER;
            if take_commands && batch < COMMAND_BATCH {
                if let Ok(command) = self.commands.try_recv() {
                    batch += 1;
                    self.router.apply(command, &mut engine);
                    continue;
                }
            }
            batch = 0;
            if let Some(deadline) = deadline.filter(|d| armed != Some(*d)) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            let wake = tokio::select! {
                r = reader.read_buf(&mut rbuf), if can_read => Wake::Read(r),
                r = write_or_flush(&mut writer, &out), if !out.is_empty() || needs_flush => Wake::Wrote(r),
                c = self.commands.recv(), if take_commands => Wake::Command(c),
                () = &mut timer, if deadline.is_some() => Wake::Timer,
                r = room(self.router.parked.as_ref()), if self.router.parked.is_some() => Wake::Room(r),
            };
            match wake {
                Wake::Read(Ok(0)) => {
                    read_open = false;
                    engine.handle_eof();
                }
                Wake::Read(Ok(_)) => engine.handle_input(origin.elapsed(), &mut rbuf),
                Wake::Read(Err(e)) | Wake::Wrote(Err(e)) => {
                    tracing::warn!(error = %e, "connection i/o failed");
                    read_open = false;
                    needs_flush = false;
                    out = Transmit::new();
                    io_error.get_or_insert(Error::from(e));
                    engine.handle_eof();
                }
                Wake::Wrote(Ok(0)) if !out.is_empty() => {
                    out = Transmit::new();
                    io_error.get_or_insert(Error::from(io::Error::from(io::ErrorKind::WriteZero)));
                    engine.handle_eof();
                }
                // With `out` empty, that turn flushed.
                Wake::Wrote(Ok(_)) if out.is_empty() => needs_flush = false,
                Wake::Wrote(Ok(n)) => {
                    out.advance(n);
                    needs_flush = true;
                }
                Wake::Command(Some(command)) => self.router.apply(command, &mut engine),
                Wake::Command(None) => {
                    self.router.handles_dropped();
                    engine.close(amqp_wire::ReplyCode::SUCCESS, "client dropped every handle");
                }
                Wake::Timer => {
                    armed = None;
                    if self.router.parked.is_some() {
                        // We stopped reading for a slow consumer: the broker's silence is ours.
                        engine.handle_peer_activity(origin.elapsed());
                    }
                    engine.handle_timeout(origin.elapsed());
                }
                Wake::Room(permit) => self.router.unpark(permit, &mut engine),
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
        let engine_error = engine
            .error()
            .cloned()
            .unwrap_or(ConnectionError::UnexpectedEof);
        let connected = self.router.session_was_open();
        (
            io_error.unwrap_or(Error::Connection(engine_error)),
            connected,
        )
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

/// TCP (and TLS) to one endpoint, with a fresh engine that queued the protocol header.
async fn open(config: &ConnectionConfig, endpoint: &Endpoint) -> Result<Session> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Io> = match &config.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let connector = crate::tls::connector(tls)?;
            let name = crate::tls::server_name(tls, &endpoint.host)?;
            Box::new(connector.connect(name, tcp).await?)
        }
    };
    let (reader, writer) = tokio::io::split(stream);
    let origin = Instant::now();
    let engine = Engine::client(config.engine_config(), origin.elapsed());
    Ok(Session {
        engine,
        origin,
        reader,
        writer,
    })
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

/// Writes as much of `out` as the socket takes in one vectored write; with nothing to write,
/// flushes (a TLS stream may hold the last record).
async fn write_or_flush<W: AsyncWrite>(
    writer: &mut WriteHalf<W>,
    out: &Transmit,
) -> io::Result<usize> {
    if out.is_empty() {
        writer.flush().await?;
        return Ok(0);
    }
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let n = out.chunks_vectored(&mut slices);
    writer.write_vectored(&slices[..n]).await
}

/// Waits until the parked delivery's consumer has room.
async fn room(
    parked: Option<&Parked>,
) -> std::result::Result<mpsc::OwnedPermit<ConsumerItem>, mpsc::error::SendError<()>> {
    match parked {
        Some(p) => p.tx.clone().reserve_owned().await,
        None => std::future::pending().await,
    }
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
