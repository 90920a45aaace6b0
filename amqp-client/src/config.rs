//! What a connection needs: where to connect, how to log in, limits, deadlines and TLS.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use amqp_wire::FieldTable;
use amqp_wire::connection::{ClientConfig, Sasl};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::Error;
use crate::uri::{AMQP_PORT, DEFAULT_HOST, DEFAULT_USER};

mod builder;
mod connector;

pub use builder::ConnectionBuilder;
pub use connector::{Connecting, Connector, Io, TcpConnector};

/// How long connecting may take by default: TCP, TLS and the AMQP handshake together.
pub(crate) const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call waits for the broker by default.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How many publishes may await their confirm on one channel by default.
const DEFAULT_CONFIRM_WINDOW: usize = 1000;
/// The largest message body accepted by default (128 MiB, RabbitMQ's own default
/// `max_message_size`).
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 128 << 20;

/// One broker address: a host name or IP address, and a port.
///
/// An IPv6 address is kept without brackets (`::1`); [`Display`](fmt::Display) adds them.
///
/// ```
/// use amqp_client::Endpoint;
/// assert_eq!(Endpoint::new("::1", 5671).to_string(), "[::1]:5671");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Default for Endpoint {
    /// `localhost:5672`.
    fn default() -> Self {
        Self::new(DEFAULT_HOST, AMQP_PORT)
    }
}

impl Endpoint {
    /// An endpoint from a host and a port; brackets around an IPv6 address are removed.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: unbracket(host.into()),
            port,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub(super) fn unbracket(host: String) -> String {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.to_owned(),
        None => host,
    }
}

/// TLS settings for `amqps` connections.
///
/// `Default` verifies the server against the system's root certificates and presents no
/// client certificate. A rustls config in [`TlsOptions::config`] replaces all the other
/// fields except [`TlsOptions::server_name`].
///
/// ```
/// use amqp_client::TlsOptions;
/// let tls = TlsOptions {
///     ca_file: Some("/etc/rabbitmq/ca.pem".into()),
///     client_cert: Some("/etc/app/client.pem".into()),
///     client_key: Some("/etc/app/client.key".into()),
///     ..TlsOptions::default()
/// };
/// assert!(tls.verify);
/// ```
#[derive(Clone)]
pub struct TlsOptions {
    /// PEM file with the CA certificates to trust instead of the system's (`cacertfile`).
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate chain, for brokers that ask for one, such as
    /// with SASL `EXTERNAL` (`certfile`). Needs [`TlsOptions::client_key`].
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key: PKCS#8, PKCS#1 or SEC1, not
    /// encrypted (`keyfile`).
    pub client_key: Option<PathBuf>,
    /// The name to send as SNI and to verify the certificate against, when it differs from
    /// the host connected to (`server_name_indication`).
    pub server_name: Option<String>,
    /// Verify the server's certificate (`verify=verify_peer`, the default). `false`
    /// (`verify_none`) accepts any certificate, which lets anyone on the path read and change
    /// the traffic; it is logged as a warning.
    pub verify: bool,
    /// A rustls config built by the caller; it wins over the file options and `verify`.
    pub config: Option<Arc<rustls::ClientConfig>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            client_cert: None,
            client_key: None,
            server_name: None,
            verify: true,
            config: None,
        }
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // rustls's own Debug of a config is long and says little; show only that it is there.
        f.debug_struct("TlsOptions")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field(
                "config",
                &self.config.as_ref().map(|_| "<rustls::ClientConfig>"),
            )
            .finish()
    }
}

/// Everything needed to open a connection.
///
/// Make one from a URI ([`ConnectionConfig::from_uri`], or `parse()`), with
/// [`ConnectionConfig::builder`], or as a struct literal over [`ConnectionConfig::default`].
/// `Debug` never shows the password; [`ConnectionConfig::redacted_uri`] gives a URI for logs.
///
/// ```
/// use std::time::Duration;
/// use amqp_client::ConnectionConfig;
///
/// let config: ConnectionConfig = "amqps://app:s3cret@rabbit-1,rabbit-2:5670/orders?heartbeat=10"
///     .parse()
///     .unwrap();
/// assert_eq!(config.endpoints[1].port, 5670);
/// assert_eq!(config.heartbeat, Some(10));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// assert_eq!(
///     config.redacted_uri(),
///     "amqps://app:***@rabbit-1:5671,rabbit-2:5670/orders?heartbeat=10"
/// );
///
/// let config = ConnectionConfig {
///     operation_timeout: Duration::from_secs(5),
///     ..ConnectionConfig::default()
/// };
/// assert_eq!(config.endpoints[0].to_string(), "localhost:5672");
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// The brokers to try, in order. Never empty when made by [`ConnectionConfig::from_uri`]
    /// or the builder.
    pub endpoints: Vec<Endpoint>,
    /// SASL mechanism and credentials (`Debug` hides the password).
    pub sasl: Sasl,
    /// The virtual host to open.
    pub virtual_host: String,
    /// Shown in the management UI and by `rabbitmqctl list_connections`.
    pub connection_name: Option<String>,
    /// Extra client properties; `product`, `version`, `platform`, `capabilities` and
    /// `connection_name` are added.
    pub client_properties: FieldTable,
    /// Heartbeat interval in seconds: `None` takes the broker's (60 s on RabbitMQ), or 60 s
    /// when the broker offers none; `Some(0)` turns heartbeats off; `Some(n)` takes the lower
    /// of `n` and the broker's.
    pub heartbeat: Option<u16>,
    /// The largest frame wanted, at least 8192; 0 (the default) means 128 KiB. The broker may
    /// lower it, never raise it, so one frame never makes the client buffer more.
    pub frame_max: u32,
    /// The highest channel number wanted; 0 (the default) takes the broker's.
    pub channel_max: u16,
    /// How long connecting may take: TCP connect, TLS and the AMQP handshake together, for
    /// each endpoint tried. Default 30 s.
    pub connection_timeout: Duration,
    /// How long a call that waits on the broker (declare, bind, close, ...) waits by
    /// default. Default 30 s.
    pub operation_timeout: Duration,
    /// How long a publish waits while the broker has blocked publishers (a memory or disk
    /// alarm) before failing; `None` (the default) waits for as long as the alarm lasts.
    pub blocked_timeout: Option<Duration>,
    /// The most publishes awaiting their confirm on one channel in confirm mode; a publish
    /// beyond it waits. Default 1000.
    pub confirm_window: usize,
    /// How long an awaited [`crate::Confirm`] waits for the broker's answer before it
    /// resolves with [`crate::Error::OutcomeUnknown`]; `None` (the default) takes
    /// `operation_timeout`.
    pub confirm_timeout: Option<Duration>,
    /// The largest inbound message body accepted; a larger one closes its channel before
    /// any of it is buffered. Default 128 MiB.
    pub max_message_size: u64,
    /// TLS settings; `Some` for `amqps`.
    pub tls: Option<TlsOptions>,
    /// What happens when the connection is lost. On by default.
    pub recovery: Recovery,
    /// How each connection attempt gets its byte stream (TLS, when set, runs over it);
    /// [`crate::TcpConnector`] by default.
    pub connector: Arc<dyn Connector>,
}

/// Automatic recovery: after the connection is lost (not closed by the application), reconnect
/// to the endpoints in a shuffled order, with exponential backoff and jitter between rounds,
/// reopen every channel with its qos and confirm/tx mode, declare the recorded exchanges,
/// queues and bindings again, and re-register the consumers under their tags. `Channel` and
/// `Consumer` handles keep working; a consumer's stream does not end.
///
/// Publishes awaiting their confirm when the connection is lost resolve with
/// [`crate::Error::OutcomeUnknown`], unless `republish` is set: then they are published again
/// on the new connection and resolve with the new outcome (at-least-once, duplicates possible).
///
/// While the connection is down, commands wait in the connection's bounded queue and go out
/// once it is recovered: a publish made then resolves only after the recovery (or with the
/// connection's error when recovery gives up). With `max_rounds: None` an outage that never
/// ends keeps such a [`crate::Confirm`] pending; bound it with `max_rounds` or a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Recover at all. Default true.
    pub enabled: bool,
    /// The pause after the first round of failed attempts; it doubles each round. Default 100 ms.
    pub initial_backoff: Duration,
    /// The longest pause between rounds. Default 10 s.
    pub max_backoff: Duration,
    /// Rounds (each tries every endpoint once) before giving up; `None` tries forever.
    pub max_rounds: Option<u32>,
    /// Publish unconfirmed messages again after a recovery instead of failing them.
    pub republish: bool,
}

impl Default for Recovery {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_rounds: None,
            republish: false,
        }
    }
}

impl Default for ConnectionConfig {
    /// `amqp://guest:guest@localhost:5672/%2f`, what a fresh RabbitMQ accepts from localhost.
    fn default() -> Self {
        Self {
            endpoints: vec![Endpoint::new(DEFAULT_HOST, AMQP_PORT)],
            sasl: Sasl::plain(DEFAULT_USER, DEFAULT_USER),
            virtual_host: "/".to_owned(),
            connection_name: None,
            client_properties: FieldTable::new(),
            heartbeat: None,
            frame_max: 0,
            channel_max: 0,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            blocked_timeout: None,
            confirm_window: DEFAULT_CONFIRM_WINDOW,
            confirm_timeout: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            tls: None,
            recovery: Recovery::default(),
            connector: Arc::new(TcpConnector),
        }
    }
}

impl ConnectionConfig {
    /// Parses an `amqp://` or `amqps://` URI as RabbitMQ's URI specification describes it,
    /// with the query options of RabbitMQ's clients:
    ///
    /// ```text
    /// amqp[s]://[user[:password]@]host[:port][,host[:port]...][/vhost][?key=value&...]
    /// ```
    ///
    /// - User name, password, host and vhost are percent-decoded: a `/`, `@`, `:`, `?` or `#`
    ///   in a password must be written `%2F`, `%40`, `%3A`, `%3F`, `%23`.
    /// - Absent parts take defaults: user and password `guest`, host `localhost`, port 5672
    ///   (`amqp`) or 5671 (`amqps`). An absent or empty path (`amqp://host`,
    ///   `amqp://host/`) is the vhost `/`, as in pika; write `%2f` for `/` in a vhost name.
    /// - Hosts separated by commas are tried in order; IPv6 addresses go in brackets.
    /// - Query options: `heartbeat` (seconds), `frame_max`, `channel_max`,
    ///   `connection_timeout` (milliseconds), `auth_mechanism` (`plain`, `amqplain`,
    ///   `external`), `connection_name`, and for `amqps` only `cacertfile`, `certfile`,
    ///   `keyfile`, `verify` (`verify_peer` or `verify_none`) and `server_name_indication`.
    ///
    /// Files named in the URI are read when connecting, not here.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown scheme, a bad port, a part that is not UTF-8 once
    /// decoded, an unknown or repeated option, a bad option value, or a TLS option in an
    /// `amqp://` URI. The error never contains the password.
    ///
    /// ```
    /// use amqp_client::{ConfigError, ConnectionConfig, Error};
    ///
    /// let config = ConnectionConfig::from_uri(
    ///     "amqps://app:p%40ss@[::1]/orders?cacertfile=/etc/ca.pem&connection_timeout=5000",
    /// )?;
    /// assert_eq!((config.endpoints[0].host.as_str(), config.endpoints[0].port), ("::1", 5671));
    /// assert_eq!(config.virtual_host, "orders");
    /// assert_eq!(config.connection_timeout.as_secs(), 5);
    ///
    /// assert!(matches!(
    ///     ConnectionConfig::from_uri("amqp://host?hearbeat=5"),
    ///     Err(Error::Config(ConfigError::UnknownOption(_)))
    /// ));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_uri(uri: &str) -> Result<Self, Error> {
        Ok(Self::builder().uri(uri)?.build())
    }

    /// A builder that starts from [`ConnectionConfig::default`]: `localhost:5672`,
    /// guest/guest, vhost `/`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use amqp_client::ConnectionConfig;
    ///
    /// let config = ConnectionConfig::builder()
    ///     .host("rabbit.internal")
    ///     .credentials("orders", "s3cret")
    ///     .virtual_host("orders")
    ///     .connection_name("order-service")
    ///     .heartbeat(15)
    ///     .operation_timeout(Duration::from_secs(5))
    ///     .build();
    /// assert_eq!(config.endpoints[0].to_string(), "rabbit.internal:5672");
    /// ```
    pub fn builder() -> ConnectionBuilder {
        ConnectionBuilder::new()
    }

    /// The configuration as an `amqp[s]://` URI for logs, the password replaced by `***`.
    ///
    /// Every endpoint is listed with its port; query options are listed when they differ
    /// from the defaults. Settings a URI cannot say (client properties, a rustls config,
    /// operation timeouts, ...) are left out.
    pub fn redacted_uri(&self) -> String {
        let mut out = String::from(if self.tls.is_some() {
            "amqps://"
        } else {
            "amqp://"
        });
        if let Sasl::Plain { username, .. } | Sasl::AmqPlain { username, .. } = &self.sasl {
            out.push_str(&encode(username));
            out.push_str(":***@");
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if endpoint.host.contains(':') {
                out.push_str(&format!("[{}]:{}", endpoint.host, endpoint.port));
            } else {
                out.push_str(&format!("{}:{}", encode(&endpoint.host), endpoint.port));
            }
        }
        out.push('/');
        out.push_str(&encode(&self.virtual_host));
        let query = self.query_options();
        for (i, (key, value)) in query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(key);
            out.push('=');
            out.push_str(&utf8_percent_encode(value, QUERY_VALUE).to_string());
        }
        out
    }

    /// The query options of [`ConnectionConfig::redacted_uri`], decoded.
    fn query_options(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(heartbeat) = self.heartbeat {
            query.push(("heartbeat", heartbeat.to_string()));
        }
        if self.frame_max != 0 {
            query.push(("frame_max", self.frame_max.to_string()));
        }
        if self.channel_max != 0 {
            query.push(("channel_max", self.channel_max.to_string()));
        }
        if self.connection_timeout != DEFAULT_CONNECTION_TIMEOUT {
            let ms = self.connection_timeout.as_millis().max(1);
            query.push(("connection_timeout", ms.to_string()));
        }
        if !matches!(self.sasl, Sasl::Plain { .. }) {
            query.push(("auth_mechanism", self.sasl.mechanism().to_ascii_lowercase()));
        }
        if let Some(name) = &self.connection_name {
            query.push(("connection_name", name.clone()));
        }
        let Some(tls) = &self.tls else {
            return query;
        };
        let files = [
            ("cacertfile", &tls.ca_file),
            ("certfile", &tls.client_cert),
            ("keyfile", &tls.client_key),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                query.push((key, path.to_string_lossy().into_owned()));
            }
        }
        if !tls.verify {
            query.push(("verify", "verify_none".to_owned()));
        }
        if let Some(name) = &tls.server_name {
            query.push(("server_name_indication", name.clone()));
        }
        query
    }

    /// The engine's view: credentials, vhost, client properties, tune wishes, limits. The
    /// handshake gets all of `connection_timeout` (the driver bounds TCP and TLS with the
    /// same deadline) and closing waits `operation_timeout` for `close-ok`.
    pub(crate) fn engine_config(&self) -> ClientConfig {
        ClientConfig {
            sasl: self.sasl.clone(),
            virtual_host: self.virtual_host.clone(),
            connection_name: self.connection_name.clone(),
            client_properties: self.client_properties.clone(),
            channel_max: self.channel_max,
            frame_max: self.frame_max,
            heartbeat: self.heartbeat,
            max_message_size: self.max_message_size,
            handshake_timeout: self.connection_timeout,
            close_timeout: self.operation_timeout,
        }
    }
}

/// What [`ConnectionConfig::redacted_uri`] percent-encodes in user names, hosts and vhosts:
/// everything but RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Query values keep their `/` (file paths stay readable).
const QUERY_VALUE: &AsciiSet = &COMPONENT.remove(b'/');

fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

impl FromStr for ConnectionConfig {
    type Err = Error;

    /// Same as [`ConnectionConfig::from_uri`].
    fn from_str(uri: &str) -> Result<Self, Error> {
        Self::from_uri(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConfigError;

    fn parse(uri: &str) -> ConnectionConfig {
        match ConnectionConfig::from_uri(uri) {
            Ok(config) => config,
            Err(e) => panic!("{uri}: {e}"),
        }
    }

    #[test]
    fn default_is_local_guest() {
        let config = ConnectionConfig::default();
        assert_eq!(config.endpoints, [Endpoint::new("localhost", 5672)]);
        assert_eq!(config.sasl, Sasl::plain("guest", "guest"));
        assert_eq!(config.virtual_host, "/");
        assert_eq!(config.connection_timeout, Duration::from_secs(30));
        assert_eq!(config.operation_timeout, Duration::from_secs(30));
        assert_eq!(config.blocked_timeout, None);
        assert_eq!(config.confirm_window, 1000);
        assert_eq!(config.max_message_size, 128 << 20);
        assert!(config.tls.is_none());
        assert_eq!(config.redacted_uri(), "amqp://guest:***@localhost:5672/%2F");
        // The builder and the spelled-out URI agree with Default.
        for other in [
            ConnectionConfig::builder().build(),
            parse("amqp://guest:guest@localhost:5672/%2f"),
            parse("amqp://"),
        ] {
            assert_eq!(other.redacted_uri(), config.redacted_uri());
            assert_eq!(other.sasl, config.sasl);
        }
    }

    #[test]
    fn from_uri_fills_every_field() {
        let config = parse(
            "amqps://u:p@h1:5000,h2/vh?heartbeat=7&frame_max=8192&channel_max=9\
             &connection_timeout=1500&connection_name=app&verify=verify_none",
        );
        assert_eq!(
            config.endpoints,
            [Endpoint::new("h1", 5000), Endpoint::new("h2", 5671)]
        );
        assert_eq!(config.sasl, Sasl::plain("u", "p"));
        assert_eq!(config.virtual_host, "vh");
        assert_eq!(config.heartbeat, Some(7));
        assert_eq!(config.frame_max, 8192);
        assert_eq!(config.channel_max, 9);
        assert_eq!(config.connection_timeout, Duration::from_millis(1500));
        assert_eq!(config.connection_name.as_deref(), Some("app"));
        assert!(config.tls.as_ref().is_some_and(|t| !t.verify));
    }

    #[test]
    fn from_str_and_errors() {
        let config: ConnectionConfig = "amqp://h:1".parse().unwrap();
        assert_eq!(config.endpoints, [Endpoint::new("h", 1)]);
        let err = "amqp://h:0".parse::<ConnectionConfig>().unwrap_err();
        assert!(matches!(err, Error::Config(ConfigError::Port(ref p)) if p == "0"));
        assert_eq!(err.to_string(), "invalid configuration: invalid port \"0\"");
    }

    #[test]
    fn debug_never_shows_the_password() {
        for sasl in [
            Sasl::plain("app", "hunter2"),
            Sasl::AmqPlain {
                username: "app".into(),
                password: "hunter2".into(),
            },
        ] {
            let config = ConnectionConfig {
                sasl,
                tls: Some(TlsOptions::default()),
                ..parse("amqp://app:hunter2@h")
            };
            let debug = format!("{config:?}");
            assert!(debug.contains("app"), "{debug}");
            assert!(!debug.contains("hunter2"), "{debug}");
            let pretty = format!("{config:#?}");
            assert!(!pretty.contains("hunter2"), "{pretty}");
            let builder = format!(
                "{:?}",
                ConnectionConfig::builder().credentials("a", "hunter2")
            );
            assert!(!builder.contains("hunter2"), "{builder}");
        }
    }

    #[test]
    fn redacted_uri_hides_the_password_and_parses_back() {
        let uri = "amqps://us%40er:p%40ss@[::1]:5000,h%C3%A9:5001/v%2Fh?heartbeat=0\
                   &frame_max=4096&channel_max=2&connection_timeout=250\
                   &auth_mechanism=amqplain&connection_name=a%26b&cacertfile=/ca%20dir/ca.pem\
                   &certfile=/c.pem&keyfile=/k.pem&verify=verify_none&server_name_indication=sni";
        let config = parse(uri);
        let redacted = config.redacted_uri();
        assert_eq!(
            redacted,
            "amqps://us%40er:***@[::1]:5000,h%C3%A9:5001/v%2Fh?heartbeat=0&frame_max=4096\
             &channel_max=2&connection_timeout=250&auth_mechanism=amqplain\
             &connection_name=a%26b&cacertfile=/ca%20dir/ca.pem&certfile=/c.pem\
             &keyfile=/k.pem&verify=verify_none&server_name_indication=sni"
        );
        assert!(!redacted.contains("p%40ss") && !redacted.contains("p@ss"));
        // Parsing it back gives the same configuration, password aside.
        let back = parse(&redacted);
        assert_eq!(back.redacted_uri(), redacted);
        assert_eq!(
            back.sasl,
            Sasl::AmqPlain {
                username: "us@er".into(),
                password: "***".into()
            }
        );
        assert_eq!(back.endpoints, config.endpoints);
        assert_eq!(back.virtual_host, "v/h");
    }

    #[test]
    fn redacted_uri_for_external() {
        let config = parse("amqps://h?auth_mechanism=external");
        assert_eq!(
            config.redacted_uri(),
            "amqps://h:5671/%2F?auth_mechanism=external"
        );
    }

    #[test]
    fn engine_config_maps_fields() {
        let config = parse(
            "amqp://u:p@h/vh?heartbeat=3&frame_max=8192&channel_max=5\
             &connection_timeout=2000&connection_name=n",
        );
        let config = ConnectionConfig {
            max_message_size: 42,
            operation_timeout: Duration::from_secs(9),
            client_properties: [("k", "v")].into_iter().collect(),
            ..config
        };
        let engine = config.engine_config();
        assert_eq!(engine.sasl, Sasl::plain("u", "p"));
        assert_eq!(engine.virtual_host, "vh");
        assert_eq!(engine.connection_name.as_deref(), Some("n"));
        assert_eq!(engine.client_properties, config.client_properties);
        assert_eq!(engine.heartbeat, Some(3));
        assert_eq!((engine.frame_max, engine.channel_max), (8192, 5));
        assert_eq!(engine.max_message_size, 42);
        assert_eq!(engine.handshake_timeout, Duration::from_secs(2));
        assert_eq!(engine.close_timeout, Duration::from_secs(9));
    }

    #[test]
    fn endpoint_display() {
        assert_eq!(Endpoint::new("h", 1).to_string(), "h:1");
        assert_eq!(Endpoint::new("[::1]", 2).to_string(), "[::1]:2");
        assert_eq!(Endpoint::new("::1", 2).host, "::1");
    }

    #[test]
    fn tls_options_debug_is_short() {
        let tls = TlsOptions {
            config: Some(test_rustls_config()),
            ..TlsOptions::default()
        };
        let debug = format!("{tls:?}");
        assert!(
            debug.contains("config: Some(\"<rustls::ClientConfig>\")"),
            "{debug}"
        );
        assert!(debug.contains("verify: true"), "{debug}");
    }

    pub(super) fn test_rustls_config() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }
}
