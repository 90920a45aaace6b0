//! Connecting to the broker named by `--url`, and naming it in errors.

use amqp_client::{
    Channel, Connection, ConnectionConfig, ConnectionEvent, ExchangeDeclareOptions, ExchangeKind,
};
use tokio::sync::broadcast;

use crate::error::{CliError, Result};

/// The default for `--url` when `AMQP_URL` is not set: what a fresh local RabbitMQ accepts.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long a command waits for the broker to answer its close when nothing depends on it.
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection and the `host:port` it reached, for error messages.
#[derive(Debug)]
pub struct Session {
    /// The connection.
    pub conn: Connection,
    /// `host:port` of the broker.
    pub host: String,
    /// The connection's events since it opened.
    events: broadcast::Receiver<ConnectionEvent>,
}

/// Parses `url` into a configuration, naming a bad URL (never its password) in the error.
///
/// # Errors
/// [`CliError::Url`] for a URL the client cannot use.
pub fn config(url: &str) -> Result<ConnectionConfig> {
    ConnectionConfig::from_uri(url).map_err(CliError::Url)
}

/// The `host:port` list of a configuration.
pub fn hosts(config: &ConnectionConfig) -> String {
    let hosts: Vec<String> = config.endpoints.iter().map(ToString::to_string).collect();
    hosts.join(", ")
}

impl Session {
    /// Connects to the broker at `url`.
    ///
    /// # Errors
    /// [`CliError::Url`] for a bad URL, [`CliError::Connect`] naming the host when no
    /// connection could be made.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(config(url)?).await
    }

    /// Connects with a configuration (as [`Session::open`]).
    ///
    /// # Errors
    /// [`CliError::Connect`] naming the host when no connection could be made.
    pub async fn open_with(config: ConnectionConfig) -> Result<Self> {
        let host = hosts(&config);
        let conn = Connection::connect_with(config)
            .await
            .map_err(|source| CliError::Connect { host, source })?;
        let events = conn.events();
        let endpoint = conn.endpoint();
        let host = endpoint.to_string();
        Ok(Self { conn, host, events })
    }

    /// Opens a channel.
    ///
    /// # Errors
    /// [`CliError::Broker`] when the connection is gone.
    pub async fn channel(&self) -> Result<Channel> {
        self.conn
            .open_channel()
            .await
            .map_err(self.failed("open a channel"))
    }

    /// Checks that `exchange` exists (a passive `exchange.declare`), so that publishing to a
    /// missing one fails at once, naming it, rather than when the broker closes the channel.
    /// The default exchange (`""`) always exists.
    ///
    /// # Errors
    /// [`CliError::Broker`] with 404 when it does not exist.
    pub async fn require_exchange(&self, channel: &Channel, exchange: &str) -> Result<()> {
        if exchange.is_empty() {
            return Ok(());
        }
        let options = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .exchange_declare(exchange, ExchangeKind::Direct, options)
            .await
            .map_err(self.failed(format!("find exchange {exchange:?}")))
    }

    /// A function that wraps a client error into [`CliError::Broker`] with what was being done.
    pub fn failed(&self, action: impl Into<String>) -> impl FnOnce(amqp_client::Error) -> CliError {
        let action = action.into();
        let host = self.host.clone();
        move |source| CliError::Broker {
            action,
            host,
            source,
        }
    }

    /// Closes the connection. A failure to close cleanly changes nothing for the user (the
    /// work is done or has already failed), so it is not reported, and a broker that does not
    /// answer the close is given [`CLOSE_WAIT`], not the operation timeout.
    pub async fn close(self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, self.conn.close()).await;
    }

    /// Closes the connection and says whether everything handed to it reached the broker.
    /// The broker's close-ok comes after it has read all we sent before the close; a
    /// connection lost on the way lost what it had not written.
    ///
    /// # Errors
    /// [`CliError::Broker`] when the connection was lost at any time since it opened, or the
    /// close was not answered.
    pub async fn close_checked(self, action: &str) -> Result<()> {
        let mut events = self.events;
        let closed = self.conn.close().await;
        loop {
            match events.try_recv() {
                Ok(ConnectionEvent::Disconnected { error }) => {
                    return Err(CliError::Broker {
                        action: action.into(),
                        host: self.host,
                        source: error,
                    });
                }
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        closed.map_err(|source| CliError::Broker {
            action: "close".into(),
            host: self.host,
            source,
        })
    }
}
