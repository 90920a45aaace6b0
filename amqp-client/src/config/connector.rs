//! [`Connector`]: how a connection gets its byte stream to an endpoint.
//!
//! The driver calls the configured connector for every connection attempt, the first and
//! every one a recovery makes; when the configuration has TLS options, TLS then runs over
//! the stream the connector returned. [`TcpConnector`] (TCP with `TCP_NODELAY` and
//! keepalive) is the default; a user's connector can reach the broker through a Unix
//! socket, a SOCKS or HTTP proxy tunnel, or an in-memory stream.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::Endpoint;
use crate::error::Result;

/// A byte stream a connection runs over: TCP, TLS over TCP, or whatever a [`Connector`]
/// gives. Every `AsyncRead + AsyncWrite + Send + Unpin + 'static` type is one.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// What [`Connector::connect`] returns: the boxed future of a byte stream.
pub type Connecting<'a> = Pin<Box<dyn Future<Output = Result<Box<dyn Io>>> + Send + 'a>>;

/// How a connection gets its byte stream to an endpoint. Called for each connection
/// attempt, including every reconnection of a recovery; `connection_timeout` bounds it.
/// Set it with [`crate::ConnectionBuilder::connector`] or [`crate::ConnectionConfig`]'s
/// `connector` field.
///
/// ```
/// use amqp_client::{Connecting, ConnectionConfig, Connector, Endpoint};
/// use tokio::net::UnixStream;
///
/// /// Reaches the broker through a Unix socket, whatever the endpoint says.
/// #[derive(Debug)]
/// struct UnixSocket(std::path::PathBuf);
///
/// impl Connector for UnixSocket {
///     fn connect<'a>(&'a self, _endpoint: &'a Endpoint) -> Connecting<'a> {
///         Box::pin(async move {
///             let stream = UnixStream::connect(&self.0).await?;
///             Ok(Box::new(stream) as Box<dyn amqp_client::Io>)
///         })
///     }
/// }
///
/// let config = ConnectionConfig::builder()
///     .connector(UnixSocket("/run/rabbitmq.sock".into()))
///     .build();
/// # let _ = config;
/// ```
pub trait Connector: fmt::Debug + Send + Sync + 'static {
    /// Opens a byte stream to `endpoint`.
    ///
    /// # Errors
    /// Whatever keeps the stream from opening; the driver reports it and tries the next
    /// endpoint.
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> Connecting<'a>;
}

/// The default [`Connector`]: TCP to the endpoint's host and port, with `TCP_NODELAY` and
/// TCP keepalive, so that the kernel notices a dead peer on a silent network too, not
/// only heartbeats (which a broker or the application may turn off).
///
/// ```
/// use amqp_client::{ConnectionConfig, TcpConnector};
/// let config = ConnectionConfig::builder().connector(TcpConnector).build();
/// # let _ = config;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

/// TCP keepalive: probes after this long without traffic...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// ...every this long until the kernel gives up on the peer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> Connecting<'a> {
        Box::pin(async move {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
            tcp.set_nodelay(true)?;
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL);
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
            Ok(Box::new(tcp) as Box<dyn Io>)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::{Connection, ConnectionConfig, Error};

    /// Connects through an in-memory pipe and hands its far end to the test.
    #[derive(Debug)]
    struct InMemory(Mutex<mpsc::UnboundedSender<DuplexStream>>);

    impl Connector for InMemory {
        fn connect<'a>(&'a self, _endpoint: &'a Endpoint) -> Connecting<'a> {
            Box::pin(async move {
                let (client, server) = tokio::io::duplex(4096);
                let sent = self.0.lock().map(|tx| tx.send(server).is_ok());
                assert_eq!(sent.ok(), Some(true), "the test stopped listening");
                Ok(Box::new(client) as Box<dyn Io>)
            })
        }
    }

    /// Refuses every connection.
    #[derive(Debug)]
    struct Refusing;

    impl Connector for Refusing {
        fn connect<'a>(&'a self, _endpoint: &'a Endpoint) -> Connecting<'a> {
            Box::pin(async {
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
            })
        }
    }

    #[tokio::test]
    async fn the_handshake_runs_over_the_connectors_stream() {
        let (tx, mut streams) = mpsc::unbounded_channel();
        let config = ConnectionConfig::builder()
            .connector(InMemory(Mutex::new(tx)))
            .connection_timeout(Duration::from_secs(5))
            .build();
        let connecting = tokio::spawn(Connection::connect_with(config));
        let mut server = streams.recv().await.expect("the connector was called");
        let mut header = [0u8; 8];
        server.read_exact(&mut header).await.expect("a header");
        assert_eq!(&header, b"AMQP\x00\x00\x09\x01");
        // The "broker" hangs up: the first connection fails, as over TCP.
        drop(server);
        let result = connecting.await.expect("the connect task");
        assert!(result.is_err(), "connected to a broker that hung up");
        assert!(streams.try_recv().is_err(), "one endpoint, one attempt");
    }

    #[tokio::test]
    async fn a_connectors_error_is_the_connections() {
        let config = ConnectionConfig::builder().connector(Refusing).build();
        match Connection::connect_with(config).await {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
    }
}
