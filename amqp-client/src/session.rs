//! One socket and the engine speaking over it: the loop that moves bytes between them until
//! the engine is closed and flushed, or the socket fails.
//!
//! Each turn: the engine's output and events are drained ([`Session::drive_events`]), commands
//! are applied in bounded batches, then one `select!` waits for whatever comes first: the
//! socket readable, the socket writable, a command, the earliest deadline, room for a parked
//! delivery, or the application closing the connection.
//!
//! Every wait is bounded: the engine's deadlines (heartbeats, handshake, close), and the
//! write-progress deadline: output pending and nothing written for three heartbeat intervals
//! (the broker stopped reading) ends the session, unless the broker said it blocked us, when
//! `blocked_timeout` applies.

use std::io::{self, IoSlice};
use std::time::Duration;

use amqp_wire::Transmit;
use amqp_wire::connection::{Connection as Engine, ConnectionError, State};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::command::Command;
use crate::config::{ConnectionConfig, Io};
use crate::error::Error;
use crate::router::{Parked, Room, Router};

/// Octets the engine may have queued for the socket before the session stops taking commands:
/// the bound that makes publishers wait when the socket is slow.
const HIGH_WATER: usize = 512 * 1024;
/// Octets queued for the socket past which the session stops reading it too: the replies the
/// engine sends by itself (requeues, flow-ok, cancel-ok) cannot pile up while the broker reads
/// nothing.
const OUTPUT_LIMIT: usize = 2 * HIGH_WATER;
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

// Carries a command as it came off the queue; see `Command` for why it is not boxed.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Command(Option<Command>),
    Timer,
    Room(Option<Room>),
    CloseRequested,
}

/// What the session's turn decided it may wait for.
struct Turn {
    closed: bool,
    can_read: bool,
    take_commands: bool,
    deadline: Option<Instant>,
}

/// One socket and the engine speaking over it.
pub(crate) struct Session {
    engine: Engine,
    /// The engine's clock reads the time elapsed since this instant.
    origin: Instant,
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
    rbuf: BytesMut,
    out: Transmit,
    read_open: bool,
    needs_flush: bool,
    io_error: Option<Error>,
    /// Once the engine closed: how long its last octets may take.
    flush_until: Option<Instant>,
    /// Since when output has waited with nothing written (`None`: no output waits).
    stalled_since: Option<Instant>,
    /// How long output may wait with nothing written, unless the broker blocked us: the
    /// connection timeout during the handshake, then three heartbeat intervals.
    stall_limit: Duration,
    /// The stall limit once open without heartbeats.
    operation_timeout: Duration,
    /// The same while the broker says it blocked us (`None`: as long as it lasts).
    blocked_limit: Option<Duration>,
    /// Commands applied since the last `select!`.
    batch: usize,
    /// The application asked to close. Its `Close` command comes through the queue, after
    /// what it sent before; only while the queue cannot move does the session close at once.
    close_pending: bool,
}

impl Session {
    /// A session over `stream`, with a fresh engine that queued the protocol header.
    pub(crate) fn new(config: &ConnectionConfig, stream: Box<dyn Io>) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let origin = Instant::now();
        Self {
            engine: Engine::client(config.engine_config(), origin.elapsed()),
            origin,
            reader,
            writer,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            out: Transmit::new(),
            read_open: true,
            needs_flush: false,
            io_error: None,
            flush_until: None,
            stalled_since: None,
            stall_limit: config.connection_timeout,
            operation_timeout: config.operation_timeout,
            blocked_limit: config.blocked_timeout,
            batch: 0,
            close_pending: false,
        }
    }

    /// Runs the socket until its engine is closed and flushed; returns why it ended.
    pub(crate) async fn run(
        mut self,
        router: &mut Router,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Error {
        // One timer for the session, moved when the deadline moves: a new `Sleep` per turn
        // would register and cancel a timer entry each time.
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut close = router.conn.close_requested.subscribe();
        self.close_pending = *close.borrow_and_update();
        loop {
            self.drive_events(router);
            let Some(turn) = self.turn(router) else { break };
            if self.close_pending && !turn.take_commands {
                self.close_pending = false;
                router.close_requested(&mut self.engine);
                continue;
            }
            if turn.take_commands && self.batch < COMMAND_BATCH {
                if let Ok(command) = commands.try_recv() {
                    self.batch += 1;
                    router.apply(command, &mut self.engine);
                    continue;
                }
            }
            self.batch = 0;
            if let Some(deadline) = turn.deadline.filter(|d| armed != Some(*d)) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            let wake = self
                .wait(router, commands, &turn, timer.as_mut(), &mut close)
                .await;
            if matches!(wake, Wake::Timer) {
                armed = None;
            }
            self.handle(wake, router);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
        let engine_error = self
            .engine
            .error()
            .cloned()
            .unwrap_or(ConnectionError::UnexpectedEof);
        self.io_error.unwrap_or(Error::Connection(engine_error))
    }

    /// Moves the engine's output into `out` and its events to their waiters. Routing an
    /// event may queue frames (a requeue, a recovery step): transmit after each, so nothing
    /// waits for the next wake-up. While a delivery is parked, the events after it wait in the
    /// engine: one read can hold many deliveries, and only one can be parked.
    fn drive_events(&mut self, router: &mut Router) {
        let now = self.origin.elapsed();
        loop {
            let _ = self.engine.poll_transmit(now, &mut self.out);
            if router.parked.is_some() {
                break;
            }
            let Some(event) = self.engine.poll_event() else {
                break;
            };
            router.route(event, &mut self.engine);
        }
        router.release_windows();
        if self.engine.state() == State::Open {
            self.stall_limit = stall_limit(self.engine.tune().heartbeat, self.operation_timeout);
        }
        match (&self.stalled_since, self.out.is_empty()) {
            (_, true) => self.stalled_since = None,
            (None, false) => self.stalled_since = Some(Instant::now()),
            (Some(_), false) => {}
        }
    }

    /// What this turn may wait for, or `None` when the session is over: the engine closed
    /// and its last octets written (or not worth waiting for).
    fn turn(&mut self, router: &Router) -> Option<Turn> {
        let closed = self.engine.is_closed();
        if closed {
            if self.out.is_empty() && !self.needs_flush {
                return None;
            }
            // What is left is only worth a bounded wait, and none for a peer that stopped
            // answering: a write blocked on a silent network would never finish.
            let silent = matches!(
                self.engine.error(),
                Some(ConnectionError::MissedHeartbeats(_))
            );
            let until = *self
                .flush_until
                .get_or_insert_with(|| Instant::now() + FLUSH_LIMIT);
            if silent || Instant::now() >= until {
                tracing::debug!(
                    unsent = self.out.len(),
                    "closed session: unsent octets dropped"
                );
                return None;
            }
        }
        // A parked delivery or a full output stops reading, except while closing: the engine
        // then drops everything but the close-ok, which must not wait.
        let closing = self.engine.state() == State::Closing;
        let held = router.parked.is_some() || self.out.len() >= OUTPUT_LIMIT;
        Some(Turn {
            closed,
            can_read: self.read_open && !closed && (!held || closing),
            take_commands: !router.commands_closed()
                && !closed
                && router.accepts_commands()
                && self.out.len() < HIGH_WATER,
            deadline: self.deadline(closed, router),
        })
    }

    /// The earliest of the engine's deadline and the write-progress one.
    fn deadline(&self, closed: bool, router: &Router) -> Option<Instant> {
        if closed {
            return self.flush_until;
        }
        let engine = self
            .engine
            .poll_timeout()
            .and_then(|t| self.origin.checked_add(t));
        let stall = self
            .stalled_since
            .zip(self.current_stall_limit(router))
            .and_then(|(since, limit)| since.checked_add(limit));
        match (engine, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long output may wait unwritten now (`None`: without limit).
    fn current_stall_limit(&self, router: &Router) -> Option<Duration> {
        if router.is_blocked() {
            self.blocked_limit
        } else {
            Some(self.stall_limit)
        }
    }

    async fn wait(
        &mut self,
        router: &Router,
        commands: &mut mpsc::Receiver<Command>,
        turn: &Turn,
        timer: std::pin::Pin<&mut Sleep>,
        close: &mut watch::Receiver<bool>,
    ) -> Wake {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let writing = !self.out.is_empty() || self.needs_flush;
        let closing = router.app_closed() || turn.closed;
        tokio::select! {
            r = self.reader.read_buf(&mut self.rbuf), if turn.can_read => Wake::Read(r),
            r = write_or_flush(&mut self.writer, &self.out), if writing => Wake::Wrote(r),
            c = commands.recv(), if turn.take_commands => Wake::Command(c),
            () = timer, if turn.deadline.is_some() => Wake::Timer,
            r = room(router.parked.as_ref()), if router.parked.is_some() => Wake::Room(r),
            Ok(()) = close.changed(), if !closing => Wake::CloseRequested,
        }
    }

    fn handle(&mut self, wake: Wake, router: &mut Router) {
        match wake {
            Wake::Read(Ok(0)) => {
                self.read_open = false;
                self.engine.handle_eof();
            }
            Wake::Read(Ok(_)) => self
                .engine
                .handle_input(self.origin.elapsed(), &mut self.rbuf),
            Wake::Read(Err(e)) | Wake::Wrote(Err(e)) => {
                tracing::warn!(error = %e, "connection i/o failed");
                self.fail(Error::from(e));
            }
            Wake::Wrote(Ok(0)) if !self.out.is_empty() => {
                self.fail(Error::from(io::Error::from(io::ErrorKind::WriteZero)));
            }
            // With `out` empty, that turn flushed.
            Wake::Wrote(Ok(_)) if self.out.is_empty() => self.needs_flush = false,
            Wake::Wrote(Ok(n)) => {
                self.out.advance(n);
                self.needs_flush = true;
                self.stalled_since = Some(Instant::now());
            }
            Wake::Command(Some(command)) => router.apply(command, &mut self.engine),
            Wake::Command(None) => {
                router.handles_dropped();
                self.engine
                    .close(amqp_wire::ReplyCode::SUCCESS, "client dropped every handle");
            }
            Wake::Timer => self.drive_timer(router),
            Wake::Room(permit) => router.unpark(permit, &mut self.engine),
            Wake::CloseRequested => self.close_pending = true,
        }
    }

    /// A deadline passed: the engine's (heartbeats, handshake, close) or the write-progress
    /// one.
    fn drive_timer(&mut self, router: &Router) {
        let stalled_for = self.stalled_since.map(|since| since.elapsed());
        if let (Some(waited), Some(limit)) = (stalled_for, self.current_stall_limit(router)) {
            if waited >= limit {
                tracing::warn!(
                    ?waited,
                    unsent = self.out.len(),
                    "the broker reads nothing we send"
                );
                return self.fail(Error::WriteStalled(limit));
            }
        }
        let now = self.origin.elapsed();
        if router.parked.is_some() || self.out.len() >= OUTPUT_LIMIT {
            // We stopped reading on purpose: the broker's silence is ours.
            self.engine.handle_peer_activity(now);
        }
        self.engine.handle_timeout(now);
    }

    /// The socket failed (or is given up): what was not written is dropped, and the engine
    /// ends.
    fn fail(&mut self, error: Error) {
        self.read_open = false;
        self.needs_flush = false;
        self.out = Transmit::new();
        self.stalled_since = None;
        self.io_error.get_or_insert(error);
        self.engine.handle_eof();
    }
}

/// Output may wait unwritten for three heartbeat intervals: one more than the broker's
/// silence may last, so a peer that is gone altogether (it neither reads nor sends) is
/// reported as such, by the missed heartbeats, and this deadline catches one that only
/// stopped reading. Without heartbeats, `fallback`.
fn stall_limit(heartbeat: u16, fallback: Duration) -> Duration {
    match heartbeat {
        0 => fallback,
        secs => Duration::from_secs(3 * u64::from(secs)),
    }
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

/// Waits until the parked delivery's consumer has room: a place in its buffer, and the
/// delivery's octets of its budget. `None` when the consumer is gone.
async fn room(parked: Option<&Parked>) -> Option<Room> {
    let Some(parked) = parked else {
        return std::future::pending().await;
    };
    let place = parked.tx.clone().reserve_owned().await.ok()?;
    if parked.charge.is_some() {
        return Some(Room {
            place,
            charge: None,
        });
    }
    let budget = parked.budget.clone();
    tokio::select! {
        charge = budget.acquire_many_owned(parked.cost) => Some(Room { place, charge: charge.ok() }),
        () = parked.tx.closed() => None,
    }
}
