//! A fault-injection TCP proxy for the tests, on loopback only.
//!
//! [`Proxy::start`] listens on `127.0.0.1:0` and forwards every accepted connection to a
//! target. The test controls it while traffic flows:
//!
//! - [`Proxy::cut`]: every current connection is reset now (RST to both sides);
//! - [`Proxy::cut_after`]: every current connection forwards `n` more octets in one direction
//!   and is then reset, so a cut can fall inside a frame, a header or a body;
//! - [`Proxy::stall`] / [`Proxy::stall_current`]: bytes stop flowing (nothing is read or
//!   written, so TCP back-pressure builds up as on a black-holed network) while both sockets
//!   stay open; [`Proxy::resume`] lets them flow again;
//! - [`Proxy::set_delay`]: every chunk is forwarded that much later (latency, not a
//!   throughput limit);
//! - [`Proxy::refuse`]: new connections are closed as soon as they are accepted.
//!
//! ```text
//!  client ──► [listener 127.0.0.1:port] ──► per connection: up pump   (client ─► target)
//!                                                           down pump (target ─► client)
//!  each pump: reader ──(chunk, due time)──► writer; both wait while stalled
//! ```
//!
//! Dropping the proxy stops accepting and resets every connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Which way bytes travel through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the target (for AMQP: towards the broker).
    Upstream,
    /// From the target back to the client.
    Downstream,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Self::Upstream => 0,
            Self::Downstream => 1,
        }
    }
}

/// The controls of one proxied connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// Set once: the connection is reset.
    cut: watch::Sender<bool>,
    stalled: watch::Sender<bool>,
    /// Octets still to forward before the cut, per direction.
    budget: [Mutex<Option<u64>>; 2],
}

impl Conn {
    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// New connections start stalled.
    stalled: AtomicBool,
    refuse: AtomicBool,
    delay: watch::Sender<Duration>,
    next_id: AtomicU64,
    accepted: AtomicUsize,
    cuts: AtomicUsize,
    forwarded: [AtomicU64; 2],
}

/// A proxy listening on loopback; see the module documentation.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on loopback");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target,
            conns: Mutex::new(Vec::new()),
            stalled: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            delay: watch::Sender::new(Duration::ZERO),
            next_id: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// A proxy to the broker of [`crate::amqp_url`].
    ///
    /// # Panics
    /// When the broker's address does not resolve.
    pub async fn to_broker() -> Self {
        let addr = tokio::net::lookup_host(crate::broker_addr())
            .await
            .expect("resolve the broker")
            .find(SocketAddr::is_ipv4)
            .expect("an IPv4 broker address");
        Self::start(addr).await
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as an endpoint of a client configuration.
    pub fn endpoint(&self) -> amqp_client::Endpoint {
        amqp_client::Endpoint::new(self.addr.ip().to_string(), self.addr.port())
    }

    /// Resets every current connection now. Returns how many there were.
    pub fn cut(&self) -> usize {
        let conns = self.current();
        for conn in &conns {
            conn.cut();
        }
        conns.len()
    }

    /// Every current connection forwards `n` more octets in `direction` (then stops in the
    /// middle of whatever it was forwarding) and is reset. Returns how many connections.
    pub fn cut_after(&self, direction: Direction, n: u64) -> usize {
        let conns = self.current();
        for conn in &conns {
            *lock(&conn.budget[direction.index()]) = Some(n);
        }
        conns.len()
    }

    /// Stops forwarding on every current and future connection; sockets stay open.
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
        self.stall_current();
    }

    /// Stops forwarding on the current connections only; new ones flow.
    pub fn stall_current(&self) {
        for conn in self.current() {
            conn.stalled.send_replace(true);
        }
    }

    /// Forwards again, on current and future connections.
    pub fn resume(&self) {
        self.shared.stalled.store(false, Ordering::SeqCst);
        for conn in self.current() {
            conn.stalled.send_replace(false);
        }
    }

    /// Forwards every chunk `delay` after it was read (zero: at once).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay.send_replace(delay);
    }

    /// Closes new connections as soon as they are accepted (`true`), or forwards them.
    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Connections reset by [`Proxy::cut`] or [`Proxy::cut_after`] so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Octets forwarded so far in `direction`.
    pub fn forwarded(&self, direction: Direction) -> u64 {
        self.shared.forwarded[direction.index()].load(Ordering::SeqCst)
    }

    fn current(&self) -> Vec<Arc<Conn>> {
        lock(&self.shared.conns).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in self.current() {
            conn.cut();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let conn = Arc::new(Conn {
            id: shared.next_id.fetch_add(1, Ordering::SeqCst),
            cut: watch::Sender::new(false),
            stalled: watch::Sender::new(shared.stalled.load(Ordering::SeqCst)),
            budget: [Mutex::new(None), Mutex::new(None)],
        });
        lock(&shared.conns).push(conn.clone());
        tokio::spawn(serve(client, conn, shared.clone()));
    }
}

/// Runs one proxied connection until both directions ended or it is cut.
async fn serve(mut client: TcpStream, conn: Arc<Conn>, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut cut = conn.cut.subscribe();
    let server = tokio::select! {
        s = TcpStream::connect(shared.target) => s,
        _ = cut.wait_for(|c| *c) => Err(io::Error::other("cut while connecting")),
    };
    let was_cut = match server {
        Ok(mut server) => {
            let _ = server.set_nodelay(true);
            let was_cut = {
                let (cr, cw) = client.split();
                let (sr, sw) = server.split();
                let both = async {
                    tokio::join!(
                        pump(cr, sw, Direction::Upstream, &conn, &shared),
                        pump(sr, cw, Direction::Downstream, &conn, &shared),
                    )
                };
                tokio::select! {
                    _ = both => false,
                    _ = cut.wait_for(|c| *c) => true,
                }
            };
            if was_cut {
                // An abortive close: both peers see a reset, as when a network path dies.
                let _ = server.set_zero_linger();
            }
            was_cut
        }
        Err(_) => *cut.borrow(),
    };
    if was_cut {
        let _ = client.set_zero_linger();
        shared.cuts.fetch_add(1, Ordering::SeqCst);
    }
    lock(&shared.conns).retain(|c| c.id != conn.id);
}

/// Moves bytes one way: a reader that takes chunks off the source (counting them against a
/// cut budget) and a writer that forwards them when due. Both wait while stalled.
async fn pump<R, W>(mut src: R, mut dst: W, direction: Direction, conn: &Conn, shared: &Shared)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A few chunks of slack between reader and writer: enough for latency without a
    // throughput limit, small enough that a stall soon pushes back on the sender.
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes, bool)>(8);
    let reader = async {
        let mut stalled = conn.stalled.subscribe();
        let delay = shared.delay.subscribe();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            let _ = stalled.wait_for(|s| !*s).await;
            buf.reserve(16 * 1024);
            match src.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut chunk = buf.split().freeze();
            let mut last = false;
            if let Some(left) = lock(&conn.budget[direction.index()]).as_mut() {
                let n = chunk.len() as u64;
                if n >= *left {
                    chunk.truncate(*left as usize);
                    last = true;
                } else {
                    *left -= n;
                }
            }
            let due = Instant::now() + *delay.borrow();
            if tx.send((due, chunk, last)).await.is_err() || last {
                break;
            }
        }
    };
    let writer = async {
        let mut stalled = conn.stalled.subscribe();
        while let Some((due, chunk, last)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let _ = stalled.wait_for(|s| !*s).await;
            if !chunk.is_empty() {
                if dst.write_all(&chunk).await.is_err() {
                    break;
                }
                shared.forwarded[direction.index()].fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            if last {
                conn.cut();
                std::future::pending::<()>().await;
            }
        }
        // The source ended: pass the end on, and let the other direction finish.
        let _ = dst.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A server that counts what it receives, per connection, and sends nothing.
    async fn sink() -> (SocketAddr, mpsc::UnboundedReceiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut total = 0;
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        total += n;
                    }
                    let _ = tx.send(total);
                });
            }
        });
        (addr, rx)
    }

    async fn read_some(s: &mut TcpStream, within: Duration) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Ok(Ok(n)) => Ok(buf[..n].to_vec()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn forwards_both_ways_and_cuts_with_a_reset() {
        let proxy = Proxy::start(echo().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(proxy.connections(), 1);
        assert_eq!(proxy.cut(), 1);
        // A reset (or an end, if it raced the reset): no more bytes either way.
        match read_some(&mut s, Duration::from_secs(5)).await {
            Ok(bytes) => assert!(bytes.is_empty(), "{bytes:?}"),
            Err(e) => assert_ne!(e.kind(), io::ErrorKind::TimedOut),
        }
        wait_until("the cut connection is forgotten", || {
            proxy.connections() == 0
        })
        .await;
        assert_eq!(proxy.cuts(), 1);
        // New connections still work.
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"again").await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"again");
    }

    #[tokio::test]
    async fn cuts_after_exactly_n_octets_in_one_direction() {
        let (target, mut totals) = sink().await;
        let proxy = Proxy::start(target).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(&[1u8; 100]).await.unwrap();
        wait_until("100 octets forwarded", || {
            proxy.forwarded(Direction::Upstream) == 100
        })
        .await;
        assert_eq!(proxy.cut_after(Direction::Upstream, 1234), 1);
        // Written in pieces that do not line up with the budget.
        for _ in 0..10 {
            if s.write_all(&[2u8; 1000]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let total = tokio::time::timeout(Duration::from_secs(5), totals.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(proxy.forwarded(Direction::Upstream), 100 + 1234);
        // A reset may discard what the target had not read yet, never add to it.
        assert!((100..=100 + 1234).contains(&total), "{total}");
        assert_eq!(proxy.cuts(), 1);
    }

    #[tokio::test]
    async fn stalls_with_the_socket_open_and_resumes() {
        let proxy = Proxy::start(echo().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"a").await.unwrap();
        assert_eq!(
            read_some(&mut s, Duration::from_secs(5)).await.unwrap(),
            b"a"
        );
        proxy.stall();
        s.write_all(b"b").await.unwrap();
        let stalled = read_some(&mut s, Duration::from_millis(300)).await;
        assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(proxy.connections(), 1, "the socket stays open");
        proxy.resume();
        assert_eq!(
            read_some(&mut s, Duration::from_secs(5)).await.unwrap(),
            b"b"
        );

        // stall_current: the old connection stays stuck, a new one flows.
        proxy.stall_current();
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        fresh.write_all(b"c").await.unwrap();
        assert_eq!(
            read_some(&mut fresh, Duration::from_secs(5)).await.unwrap(),
            b"c"
        );
        s.write_all(b"d").await.unwrap();
        let stalled = read_some(&mut s, Duration::from_millis(200)).await;
        assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn delays_every_chunk() {
        let proxy = Proxy::start(echo().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set_delay(Duration::from_millis(100));
        let start = Instant::now();
        s.write_all(b"x").await.unwrap();
        assert_eq!(
            read_some(&mut s, Duration::from_secs(5)).await.unwrap(),
            b"x"
        );
        // Once up, once down.
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
        proxy.set_delay(Duration::ZERO);
        let start = Instant::now();
        s.write_all(b"y").await.unwrap();
        assert_eq!(
            read_some(&mut s, Duration::from_secs(5)).await.unwrap(),
            b"y"
        );
        assert!(
            start.elapsed() < Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn refuses_new_connections_when_told() {
        let proxy = Proxy::start(echo().await).await;
        proxy.refuse(true);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = s.write_all(b"z").await;
        match read_some(&mut s, Duration::from_secs(5)).await {
            Ok(bytes) => assert!(bytes.is_empty()),
            Err(e) => assert_ne!(e.kind(), io::ErrorKind::TimedOut),
        }
        proxy.refuse(false);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"z").await.unwrap();
        assert_eq!(
            read_some(&mut s, Duration::from_secs(5)).await.unwrap(),
            b"z"
        );
    }
}
