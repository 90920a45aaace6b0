//! The one task per connection that owns the socket and the engine.
//!
//! It only moves bytes and wakes tasks: bytes read go to the engine, bytes the engine emits go
//! to the socket (vectored, published bodies by reference), commands from handles go to the
//! engine, and the engine's events go to whoever waits for them ([`Router`]). Reads and writes
//! are both `select!` arms, so a broker flooding deliveries while we publish cannot deadlock.

use std::io::{self, IoSlice};
use std::time::Duration;

use amqp_wire::Transmit;
use amqp_wire::connection::Connection as Engine;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::command::Command;
use crate::router::{Parked, Router};

/// Octets the engine may have queued for the socket before the driver stops taking commands:
/// the bound that makes publishers wait when the socket is slow.
const HIGH_WATER: usize = 512 * 1024;
/// Free room the read buffer keeps before each read.
const READ_CHUNK: usize = 64 * 1024;
/// `IoSlice`s handed to one vectored write.
const MAX_SLICES: usize = 64;

pub(crate) struct Driver<S> {
    pub(crate) engine: Engine,
    pub(crate) reader: ReadHalf<S>,
    pub(crate) writer: WriteHalf<S>,
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
    Room(Result<mpsc::OwnedPermit<crate::consumer::ConsumerItem>, mpsc::error::SendError<()>>),
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Driver<S> {
    pub(crate) async fn run(mut self) {
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Transmit::new();
        let mut read_open = true;
        let mut commands_open = true;
        let mut needs_flush = false;
        loop {
            let _ = self.engine.poll_transmit(now(), &mut out);
            while let Some(event) = self.engine.poll_event() {
                self.router.route(event, &mut self.engine);
            }
            let closed = self.engine.is_closed();
            if closed && out.is_empty() && !needs_flush {
                break;
            }
            let deadline = self.engine.poll_timeout().map(Instant::from_std);
            let can_read = read_open && !closed && self.router.parked.is_none();
            let take_commands = commands_open && !closed && out.len() < HIGH_WATER;
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            let wake = tokio::select! {
                r = self.reader.read_buf(&mut rbuf), if can_read => Wake::Read(r),
                r = write_or_flush(&mut self.writer, &out), if !out.is_empty() || needs_flush => Wake::Wrote(r),
                c = self.commands.recv(), if take_commands => Wake::Command(c),
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Wake::Timer,
                r = room(self.router.parked.as_ref()), if self.router.parked.is_some() => Wake::Room(r),
            };
            match wake {
                Wake::Read(Ok(0)) => {
                    read_open = false;
                    self.engine.handle_eof();
                }
                Wake::Read(Ok(_)) => self.engine.handle_input(now(), &mut rbuf),
                Wake::Read(Err(e)) | Wake::Wrote(Err(e)) => {
                    tracing::warn!(error = %e, "connection i/o failed");
                    read_open = false;
                    needs_flush = false;
                    out = Transmit::new();
                    self.router.io_error(e);
                    self.engine.handle_eof();
                }
                Wake::Wrote(Ok(0)) if !out.is_empty() => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes");
                    out = Transmit::new();
                    self.router.io_error(e);
                    self.engine.handle_eof();
                }
                // With `out` empty, that turn flushed.
                Wake::Wrote(Ok(_)) if out.is_empty() => needs_flush = false,
                Wake::Wrote(Ok(n)) => {
                    out.advance(n);
                    needs_flush = true;
                }
                Wake::Command(Some(command)) => self.router.apply(command, &mut self.engine),
                Wake::Command(None) => {
                    commands_open = false;
                    self.engine
                        .close(amqp_wire::ReplyCode::SUCCESS, "client dropped every handle");
                }
                Wake::Timer => self.engine.handle_timeout(now()),
                Wake::Room(permit) => self.router.unpark(permit, &mut self.engine),
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
        self.router.finish();
        // Commands that raced the end fail with the connection's error.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            self.router.refuse(command);
        }
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

/// Waits until the parked delivery's consumer has room.
async fn room(
    parked: Option<&Parked>,
) -> Result<mpsc::OwnedPermit<crate::consumer::ConsumerItem>, mpsc::error::SendError<()>> {
    match parked {
        Some(p) => p.tx.clone().reserve_owned().await,
        None => std::future::pending().await,
    }
}
