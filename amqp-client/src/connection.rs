//! [`Connection`]: connecting, and the handle that opens channels.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use amqp_wire::connection::{ConnectionError, Tune};
use amqp_wire::{FieldTable, LongStr, ReplyCode, ShortStr};
use futures_core::Stream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::channel::Channel;
use crate::command::{Command, ask};
use crate::config::{ConnectionConfig, Endpoint};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::router::Router;

/// Commands a connection's handles may queue before `send` waits.
const COMMAND_QUEUE: usize = 4096;
/// Connection events buffered for a slow listener.
const EVENT_QUEUE: usize = 256;

/// The limits every handle of a connection applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) operation_timeout: Duration,
    pub(crate) blocked_timeout: Option<Duration>,
    pub(crate) confirm_window: usize,
    pub(crate) confirm_timeout: Duration,
}

/// What the driver and every handle of one connection share.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) limits: Limits,
    /// Set once, when the connection ends.
    pub(crate) closed: OnceLock<Error>,
    /// True while the broker blocks publishers.
    pub(crate) blocked: watch::Receiver<bool>,
    /// What the current (or last) session learnt; replaced at each reconnection.
    pub(crate) session: Mutex<SessionInfo>,
    /// Disconnected, reconnecting, recovered, blocked, ... for whoever listens.
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    /// Unconfirmed publishes are kept for publishing again after a recovery.
    pub(crate) republish: bool,
    /// The application called `close`: a recovery in progress stops instead of waiting to
    /// reconnect first.
    pub(crate) close_requested: watch::Sender<bool>,
    /// Returned messages that found no listener (see [`Connection::unhandled_returns`]).
    pub(crate) unhandled_returns: AtomicU64,
}

/// What one session (one socket) learnt about the broker.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionInfo {
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) server_properties: FieldTable,
    pub(crate) tune: Tune,
}

/// What happens to a connection, as [`Connection::events`] reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The connection was lost; recovery starts (when enabled).
    Disconnected {
        /// Why it was lost.
        error: Error,
    },
    /// An attempt to connect to an endpoint (round 0 is the first, without a pause).
    Reconnecting {
        /// The round of attempts.
        round: u32,
        /// The endpoint tried.
        endpoint: Endpoint,
    },
    /// Connected again, channels reopened, topology and consumers restored.
    Recovered {
        /// The endpoint now in use.
        endpoint: Endpoint,
    },
    /// A server-named queue was declared again under a new name.
    QueueRenamed {
        /// Its name before.
        old: ShortStr,
        /// Its name now.
        new: ShortStr,
    },
    /// Part of the topology could not be restored (the error says what).
    TopologyRecoveryFailed {
        /// The broker's answer.
        error: Error,
    },
    /// Recovery gave up, or was off: the connection is closed for good.
    Failed {
        /// The last error.
        error: Error,
    },
    /// The broker blocked publishers (a resource alarm).
    Blocked {
        /// The broker's reason.
        reason: ShortStr,
    },
    /// The broker unblocked publishers.
    Unblocked,
}

impl ConnShared {
    /// The error of a connection whose driver is gone.
    pub(crate) fn gone(&self) -> Error {
        self.closed
            .get()
            .cloned()
            .unwrap_or(Error::Connection(ConnectionError::UnexpectedEof))
    }

    /// Waits while the broker blocks publishers, at most `blocked_timeout`.
    pub(crate) async fn wait_unblocked(&self) -> Result<()> {
        if !*self.blocked.borrow() {
            return Ok(());
        }
        let mut blocked = self.blocked.clone();
        let unblocked = blocked.wait_for(|b| !*b);
        let waited = match self.limits.blocked_timeout {
            Some(limit) => tokio::time::timeout(limit, unblocked)
                .await
                .map_err(|_| Error::Blocked(limit))?,
            None => unblocked.await,
        };
        waited.map(drop).map_err(|_| self.gone())
    }
}

/// A connection to a broker. Cheap to clone; every clone is the same connection, which
/// closes when [`Connection::close`] is called or the last handle (including channels,
/// consumers and unsettled deliveries) is dropped.
///
/// ```no_run
/// # async fn example() -> amqp_client::Result<()> {
/// let conn = amqp_client::Connection::connect("amqp://guest:guest@localhost:5672/%2f").await?;
/// let channel = conn.open_channel().await?;
/// // ...
/// conn.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Connection {
    tx: mpsc::Sender<Command>,
    shared: Arc<ConnShared>,
}

impl Connection {
    /// Connects with a URI (`amqp://user:pass@host:port/vhost?heartbeat=30`, or `amqps://`).
    ///
    /// # Errors
    /// A bad URI, an unreachable host, a TLS failure, a refused login or vhost, or no
    /// handshake within `connection_timeout`.
    pub async fn connect(uri: &str) -> Result<Self> {
        Self::connect_with(ConnectionConfig::from_uri(uri)?).await
    }

    /// Connects with a configuration, trying its endpoints once each in a shuffled order.
    /// The connection then recovers by itself when lost (see [`crate::Recovery`]).
    ///
    /// # Errors
    /// As [`Connection::connect`]; with several endpoints, the last one's error.
    pub async fn connect_with(config: ConnectionConfig) -> Result<Self> {
        let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (blocked_tx, blocked) = watch::channel(false);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let shared = Arc::new(ConnShared {
            limits: Limits {
                operation_timeout: config.operation_timeout,
                blocked_timeout: config.blocked_timeout,
                confirm_window: config.confirm_window,
                confirm_timeout: config.confirm_timeout.unwrap_or(config.operation_timeout),
            },
            closed: OnceLock::new(),
            blocked,
            session: Mutex::new(SessionInfo::default()),
            events,
            republish: config.recovery.republish,
            close_requested: watch::channel(false).0,
            unhandled_returns: AtomicU64::new(0),
        });
        let (ready_tx, ready) = oneshot::channel();
        let router = Router::new(shared.clone(), tx.downgrade(), blocked_tx, ready_tx);
        let config_name = config.connection_name.clone();
        let first_endpoint = config.endpoints.first().cloned().unwrap_or_default();
        let driver = Driver {
            config: Arc::new(config),
            commands,
            router,
        };
        // Every event the driver logs carries the connection's name and first endpoint.
        let span = tracing::info_span!(
            "amqp_connection",
            name = config_name.as_deref().unwrap_or(""),
            endpoint = %first_endpoint,
        );
        tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        ready.await.map_err(|_| shared.gone())??;
        Ok(Self { tx, shared })
    }

    /// Opens a channel.
    ///
    /// # Errors
    /// When the connection is gone, or every channel number is taken.
    pub async fn open_channel(&self) -> Result<Channel> {
        let limit = self.shared.limits.operation_timeout;
        let gone = || self.shared.gone();
        let command = |reply| Command::OpenChannel { reply };
        let shared = ask(&self.tx, "channel.open", limit, gone, command).await?;
        Ok(Channel::new(shared, self.tx.clone()))
    }

    /// Closes the connection: `connection.close`, then waits for the broker's close-ok.
    /// Publishes and requests still pending fail. While the connection is lost and being
    /// recovered, it stops the recovery at once and ends the connection cleanly.
    ///
    /// # Errors
    /// The connection's error if it had already ended with one.
    pub async fn close(&self) -> Result<()> {
        if let Some(e) = self.shared.closed.get() {
            return if is_local_close(e) {
                Ok(())
            } else {
                Err(e.clone())
            };
        }
        // While the connection is down and being recovered, the driver takes no commands:
        // this tells it to stop recovering.
        self.shared.close_requested.send_replace(true);
        let limit = self.shared.limits.operation_timeout;
        let gone = || self.shared.gone();
        let command = |reply| Command::Close {
            code: ReplyCode::SUCCESS,
            text: "closed by the application".into(),
            reply,
        };
        ask(&self.tx, "connection.close", limit, gone, command).await
    }

    /// Replaces the connection's secret, such as an expiring OAuth 2 token
    /// (`connection.update-secret`), and waits for the broker to accept it.
    ///
    /// # Errors
    /// 530 when the broker refuses the new secret (it then closes the connection).
    pub async fn update_secret(&self, secret: &str, reason: &str) -> Result<()> {
        let limit = self.shared.limits.operation_timeout;
        let gone = || self.shared.gone();
        let command = |reply| Command::UpdateSecret {
            secret: LongStr::from(secret),
            reason: reason.into(),
            reply,
        };
        ask(&self.tx, "connection.update-secret", limit, gone, command)
            .await
            .map(drop)
    }

    /// The broker's `server-properties`: product, version, cluster name, capabilities (of
    /// the node reached last).
    pub fn server_properties(&self) -> FieldTable {
        self.session().server_properties
    }

    /// The agreed channel_max, frame_max and heartbeat.
    pub fn tune(&self) -> Tune {
        self.session().tune
    }

    /// The endpoint this connection reached last.
    pub fn endpoint(&self) -> Endpoint {
        self.session().endpoint.unwrap_or_default()
    }

    fn session(&self) -> SessionInfo {
        self.shared
            .session
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The connection's events: disconnected, reconnecting, recovered, failed, blocked,
    /// unblocked. Each receiver sees the events sent after it subscribed; one that falls more
    /// than 256 behind loses the oldest (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.shared.events.subscribe()
    }

    /// The connection's events as a [`Stream`]: the same events as [`Connection::events`],
    /// with a listener that fell more than 256 behind told how many it lost.
    ///
    /// ```no_run
    /// # async fn example(conn: amqp_client::Connection) {
    /// use amqp_client::{ConnectionEvent, EventsLagged};
    /// use futures_util::StreamExt;
    /// let mut events = conn.event_stream();
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Ok(ConnectionEvent::Blocked { reason }) => eprintln!("blocked: {reason}"),
    ///         Ok(ConnectionEvent::Unblocked) => eprintln!("unblocked"),
    ///         Ok(other) => eprintln!("{other:?}"),
    ///         Err(EventsLagged(lost)) => eprintln!("missed {lost} events"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn event_stream(&self) -> Events {
        Events::from(self.events())
    }

    /// How many mandatory messages the broker returned that nobody received: returned on a
    /// channel outside confirm mode with no [`Channel::returns`] listener (or one whose
    /// buffer was full), or a return that matched no publish waiting for a confirm. Each is
    /// dropped and logged at warn level. In confirm mode, a publish's return resolves its
    /// [`crate::Confirm`] as [`crate::Confirmation::Returned`] and is not counted here.
    pub fn unhandled_returns(&self) -> u64 {
        self.shared.unhandled_returns.load(Ordering::Relaxed)
    }

    /// True while the broker blocks publishers (a memory or disk alarm).
    pub fn is_blocked(&self) -> bool {
        *self.shared.blocked.borrow()
    }

    /// A watch of the blocked state, to observe `connection.blocked` / `unblocked`. The
    /// events ([`ConnectionEvent::Blocked`] / [`ConnectionEvent::Unblocked`]) say the same
    /// with the broker's reason; prefer them with [`Connection::is_blocked`].
    pub fn blocked_changes(&self) -> watch::Receiver<bool> {
        self.shared.blocked.clone()
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.get().is_some()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.shared.closed.get().cloned()
    }
}

/// A listener of [`Connection::event_stream`] fell behind and lost this many events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the event listener fell behind and lost {0} events")]
pub struct EventsLagged(pub u64);

/// The connection's events as a [`Stream`] (see [`Connection::event_stream`]); it ends when
/// the connection has ended and its last event was read.
pub struct Events {
    inner: BroadcastStream<ConnectionEvent>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl From<broadcast::Receiver<ConnectionEvent>> for Events {
    fn from(receiver: broadcast::Receiver<ConnectionEvent>) -> Self {
        Self {
            inner: BroadcastStream::new(receiver),
        }
    }
}

impl Stream for Events {
    type Item = std::result::Result<ConnectionEvent, EventsLagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| r.map_err(|BroadcastStreamRecvError::Lagged(n)| EventsLagged(n)))
        })
    }
}

/// True for the error a connection ends with when the application closed it.
pub(crate) fn is_local_close(e: &Error) -> bool {
    matches!(e, Error::Connection(ConnectionError::Closed(r))
        if r.initiator == amqp_wire::connection::Initiator::Local)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn events_stream_in_order_report_lag_and_end_with_the_sender() {
        let (tx, rx) = broadcast::channel(2);
        let mut events = Events::from(rx);
        tx.send(ConnectionEvent::Unblocked).unwrap();
        assert!(matches!(
            events.next().await,
            Some(Ok(ConnectionEvent::Unblocked))
        ));
        for _ in 0..3 {
            tx.send(ConnectionEvent::Unblocked).unwrap();
        }
        let reason = ShortStr::from_static("memory");
        tx.send(ConnectionEvent::Blocked { reason }).unwrap();
        // Capacity 2: of the four sent, the two oldest are lost.
        assert_eq!(
            events.next().await.map(|e| e.err()),
            Some(Some(EventsLagged(2)))
        );
        assert!(matches!(
            events.next().await,
            Some(Ok(ConnectionEvent::Unblocked))
        ));
        assert!(matches!(
            events.next().await,
            Some(Ok(ConnectionEvent::Blocked { reason })) if reason == "memory"
        ));
        drop(tx);
        assert!(events.next().await.is_none());
    }
}
