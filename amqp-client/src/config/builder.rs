//! [`ConnectionBuilder`]: a [`ConnectionConfig`] step by step.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amqp_wire::connection::Sasl;
use amqp_wire::{FieldTable, FieldValue};

use super::{ConnectionConfig, Connector, Endpoint, TlsOptions, unbracket};
use crate::error::Error;
use crate::uri::{self, AMQP_PORT, AMQPS_PORT, DEFAULT_HOST, HostSpec};

/// Builds a [`ConnectionConfig`] step by step; see [`ConnectionConfig::builder`].
///
/// ```
/// use amqp_client::{ConnectionConfig, Endpoint};
///
/// // Start from a URI (say, from the environment), then add what a URI cannot say.
/// let config = ConnectionConfig::builder()
///     .uri("amqp://app:secret@rabbit-1,rabbit-2/orders")?
///     .client_property("team", "payments")
///     .confirm_window(256)
///     .build();
/// assert_eq!(config.endpoints, [Endpoint::new("rabbit-1", 5672), Endpoint::new("rabbit-2", 5672)]);
/// # Ok::<(), amqp_client::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionBuilder {
    /// Everything but the endpoints, which are resolved from `hosts` and `port` by `build`.
    config: ConnectionConfig,
    /// Never empty.
    hosts: Vec<HostSpec>,
    /// The port of hosts that name none; `None`: 5672, or 5671 with TLS.
    port: Option<u16>,
}

impl ConnectionBuilder {
    /// Defaults: `localhost`, port by scheme, guest/guest, vhost `/`.
    pub(super) fn new() -> Self {
        Self {
            config: ConnectionConfig::default(),
            hosts: vec![HostSpec {
                host: DEFAULT_HOST.to_owned(),
                port: None,
            }],
            port: None,
        }
    }

    /// Takes everything a URI can say from `uri` (see [`ConnectionConfig::from_uri`]), its
    /// defaults for what the URI leaves out, so call this first. Settings a URI cannot say
    /// are kept: client properties, operation and blocked timeouts, confirm window, maximum
    /// message size, and for an `amqps` URI a rustls config given to
    /// [`ConnectionBuilder::tls_config`].
    ///
    /// # Errors
    /// As [`ConnectionConfig::from_uri`].
    pub fn uri(mut self, uri: &str) -> Result<Self, Error> {
        let parsed = uri::parse(uri)?;
        let rustls_config = self.config.tls.take().and_then(|tls| tls.config);
        self.hosts = parsed.hosts;
        self.port = None;
        let config = &mut self.config;
        config.sasl = parsed.sasl;
        config.virtual_host = parsed.virtual_host;
        config.heartbeat = parsed.heartbeat;
        config.frame_max = parsed.frame_max;
        config.channel_max = parsed.channel_max;
        config.connection_timeout = parsed.connection_timeout;
        config.connection_name = parsed.connection_name;
        config.tls = parsed.tls.map(|tls| TlsOptions {
            config: rustls_config,
            ..tls
        });
        Ok(self)
    }

    /// Connects to this one host (a name or an IP address; IPv6 with or without brackets),
    /// replacing the host list.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts = vec![HostSpec {
            host: unbracket(host.into()),
            port: None,
        }];
        self
    }

    /// The port for hosts given without one (by [`ConnectionBuilder::host`] or a URI host
    /// without a port). Default 5672, or 5671 with TLS.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Connects to these endpoints, tried in order, replacing the host list. An empty list
    /// changes nothing.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let hosts: Vec<HostSpec> = endpoints
            .into_iter()
            .map(|e| HostSpec {
                host: unbracket(e.host),
                port: Some(e.port),
            })
            .collect();
        if !hosts.is_empty() {
            self.hosts = hosts;
        }
        self
    }

    /// Logs in with this user name and password: SASL `PLAIN`, or `AMQPLAIN` if that was
    /// chosen before (`EXTERNAL` becomes `PLAIN`).
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        let (username, password) = (username.into(), password.into());
        self.config.sasl = match self.config.sasl {
            Sasl::AmqPlain { .. } => Sasl::AmqPlain { username, password },
            _ => Sasl::Plain { username, password },
        };
        self
    }

    /// The SASL mechanism and credentials, such as `Sasl::External` to log in with the TLS
    /// client certificate.
    pub fn sasl(mut self, sasl: Sasl) -> Self {
        self.config.sasl = sasl;
        self
    }

    /// The virtual host to open (default `/`).
    pub fn virtual_host(mut self, vhost: impl Into<String>) -> Self {
        self.config.virtual_host = vhost.into();
        self
    }

    /// The name shown in the management UI and by `rabbitmqctl list_connections`.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.config.connection_name = Some(name.into());
        self
    }

    /// Adds one client property (replacing one of that name).
    ///
    /// # Panics
    /// When `key` is longer than 255 bytes (see [`FieldTable::insert`]); keys are meant to
    /// be written in the program.
    pub fn client_property(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        self.config.client_properties.insert(key, value);
        self
    }

    /// Replaces all extra client properties.
    pub fn client_properties(mut self, properties: FieldTable) -> Self {
        self.config.client_properties = properties;
        self
    }

    /// The heartbeat interval wanted, in seconds; 0 turns heartbeats off. Without it the
    /// broker's interval is used.
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.config.heartbeat = Some(seconds);
        self
    }

    /// The largest frame wanted (0: the broker's; otherwise at least 4096).
    pub fn frame_max(mut self, frame_max: u32) -> Self {
        self.config.frame_max = frame_max;
        self
    }

    /// The highest channel number wanted (0: the broker's).
    pub fn channel_max(mut self, channel_max: u16) -> Self {
        self.config.channel_max = channel_max;
        self
    }

    /// The deadline for TCP connect, TLS and the AMQP handshake together (default 30 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.config.connection_timeout = timeout;
        self
    }

    /// How long calls wait for the broker by default (default 30 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.config.operation_timeout = timeout;
        self
    }

    /// How long a publish waits while the broker blocks publishers; `None` (the default)
    /// waits for as long as it takes.
    pub fn blocked_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.blocked_timeout = timeout;
        self
    }

    /// The most unconfirmed publishes per channel in confirm mode (default 1000; 0 counts
    /// as 1).
    pub fn confirm_window(mut self, window: usize) -> Self {
        self.config.confirm_window = window.max(1);
        self
    }

    /// How long an awaited confirm waits for the broker before it resolves with
    /// [`crate::Error::OutcomeUnknown`] (default: the operation timeout).
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.config.confirm_timeout = Some(timeout);
        self
    }

    /// The largest inbound message body accepted (default 128 MiB).
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Uses TLS with these options (replacing earlier ones); hosts without a port then
    /// default to 5671.
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.config.tls = Some(options);
        self
    }

    /// Uses TLS with a rustls config built by the caller, which wins over the file options.
    pub fn tls_config(self, config: Arc<rustls::ClientConfig>) -> Self {
        self.with_tls(|tls| tls.config = Some(config))
    }

    /// Uses TLS, trusting the CA certificates in this PEM file instead of the system's.
    pub fn ca_file(self, path: impl Into<PathBuf>) -> Self {
        self.with_tls(|tls| tls.ca_file = Some(path.into()))
    }

    /// Uses TLS, presenting this client certificate chain and key (PEM files).
    pub fn client_cert(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.with_tls(|tls| {
            tls.client_cert = Some(cert.into());
            tls.client_key = Some(key.into());
        })
    }

    /// Uses TLS, verifying the server's certificate or, with `false`, accepting any
    /// (see [`TlsOptions::verify`]).
    pub fn verify_peer(self, verify: bool) -> Self {
        self.with_tls(|tls| tls.verify = verify)
    }

    /// Uses TLS, sending and verifying this server name instead of the host's.
    pub fn server_name(self, name: impl Into<String>) -> Self {
        self.with_tls(|tls| tls.server_name = Some(name.into()))
    }

    fn with_tls(mut self, change: impl FnOnce(&mut TlsOptions)) -> Self {
        change(self.config.tls.get_or_insert_with(TlsOptions::default));
        self
    }

    /// Sets the automatic recovery policy ([`crate::Recovery`]); `Recovery { enabled: false,
    /// ..Default::default() }` turns it off.
    pub fn recovery(mut self, recovery: crate::config::Recovery) -> Self {
        self.config.recovery = recovery;
        self
    }

    /// How each connection attempt gets its byte stream (see [`Connector`]); TCP by default.
    ///
    /// ```
    /// use amqp_client::{ConnectionConfig, TcpConnector};
    /// let config = ConnectionConfig::builder().connector(TcpConnector).build();
    /// # let _ = config;
    /// ```
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.config.connector = Arc::new(connector);
        self
    }

    /// The configuration.
    pub fn build(self) -> ConnectionConfig {
        let default_port = match (self.port, self.config.tls.is_some()) {
            (Some(port), _) => port,
            (None, false) => AMQP_PORT,
            (None, true) => AMQPS_PORT,
        };
        let endpoints = self
            .hosts
            .into_iter()
            .map(|spec| Endpoint {
                host: spec.host,
                port: spec.port.unwrap_or(default_port),
            })
            .collect();
        ConnectionConfig {
            endpoints,
            ..self.config
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::test_rustls_config;

    #[test]
    fn builder_sets_everything() {
        let rustls_config = test_rustls_config();
        let config = ConnectionConfig::builder()
            .host("[::1]")
            .port(6000)
            .credentials("u", "p")
            .virtual_host("vh")
            .connection_name("name")
            .client_property("team", "payments")
            .heartbeat(5)
            .frame_max(65_536)
            .channel_max(16)
            .connection_timeout(Duration::from_secs(3))
            .operation_timeout(Duration::from_secs(4))
            .blocked_timeout(Some(Duration::from_secs(5)))
            .confirm_window(0)
            .max_message_size(1 << 20)
            .ca_file("/ca.pem")
            .client_cert("/c.pem", "/k.pem")
            .server_name("broker")
            .verify_peer(false)
            .tls_config(rustls_config.clone())
            .build();
        assert_eq!(config.endpoints, [Endpoint::new("::1", 6000)]);
        assert_eq!(config.sasl, Sasl::plain("u", "p"));
        assert_eq!(config.virtual_host, "vh");
        assert_eq!(config.connection_name.as_deref(), Some("name"));
        assert_eq!(
            config
                .client_properties
                .get("team")
                .and_then(FieldValue::as_str),
            Some("payments")
        );
        assert_eq!(config.heartbeat, Some(5));
        assert_eq!((config.frame_max, config.channel_max), (65_536, 16));
        assert_eq!(config.connection_timeout, Duration::from_secs(3));
        assert_eq!(config.operation_timeout, Duration::from_secs(4));
        assert_eq!(config.blocked_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.confirm_window, 1);
        assert_eq!(config.max_message_size, 1 << 20);
        let Some(tls) = config.tls else {
            panic!("no tls")
        };
        assert_eq!(tls.ca_file, Some("/ca.pem".into()));
        assert_eq!(tls.client_cert, Some("/c.pem".into()));
        assert_eq!(tls.client_key, Some("/k.pem".into()));
        assert_eq!(tls.server_name.as_deref(), Some("broker"));
        assert!(!tls.verify);
        assert!(tls.config.is_some_and(|c| Arc::ptr_eq(&c, &rustls_config)));
    }

    #[test]
    fn builder_ports_follow_tls() {
        let plain = ConnectionConfig::builder().host("h").build();
        assert_eq!(plain.endpoints, [Endpoint::new("h", 5672)]);
        let tls = ConnectionConfig::builder()
            .host("h")
            .tls(TlsOptions::default())
            .build();
        assert_eq!(tls.endpoints, [Endpoint::new("h", 5671)]);
        // Ports given explicitly stay; `port` fills in the others.
        let mixed = ConnectionConfig::builder()
            .uri("amqps://a:1,b")
            .unwrap()
            .port(7000)
            .build();
        assert_eq!(
            mixed.endpoints,
            [Endpoint::new("a", 1), Endpoint::new("b", 7000)]
        );
        let listed = ConnectionConfig::builder()
            .endpoints([Endpoint::new("x", 1), Endpoint::new("[::2]", 2)])
            .endpoints([])
            .build();
        assert_eq!(
            listed.endpoints,
            [Endpoint::new("x", 1), Endpoint::new("::2", 2)]
        );
    }

    #[test]
    fn builder_uri_keeps_what_a_uri_cannot_say() {
        let rustls_config = test_rustls_config();
        let config = ConnectionConfig::builder()
            .heartbeat(99)
            .operation_timeout(Duration::from_secs(1))
            .confirm_window(10)
            .client_property("k", "v")
            .tls_config(rustls_config.clone())
            .uri("amqps://u:p@h/vh")
            .unwrap()
            .build();
        assert_eq!(config.heartbeat, None, "the URI's default wins");
        assert_eq!(config.operation_timeout, Duration::from_secs(1));
        assert_eq!(config.confirm_window, 10);
        assert!(config.client_properties.get("k").is_some());
        assert!(
            config
                .tls
                .and_then(|t| t.config)
                .is_some_and(|c| Arc::ptr_eq(&c, &rustls_config))
        );
        // A plain URI turns TLS off.
        let plain = ConnectionConfig::builder()
            .tls_config(rustls_config)
            .uri("amqp://h")
            .unwrap()
            .build();
        assert!(plain.tls.is_none());
        assert_eq!(plain.endpoints, [Endpoint::new("h", 5672)]);
        assert!(ConnectionConfig::builder().uri("amqp://h?x=1").is_err());
    }

    #[test]
    fn credentials_keep_amqplain() {
        let config = ConnectionConfig::builder()
            .uri("amqp://h?auth_mechanism=amqplain")
            .unwrap()
            .credentials("a", "b")
            .build();
        assert_eq!(
            config.sasl,
            Sasl::AmqPlain {
                username: "a".into(),
                password: "b".into()
            }
        );
        let config = ConnectionConfig::builder()
            .sasl(Sasl::External)
            .credentials("a", "b")
            .build();
        assert_eq!(config.sasl, Sasl::plain("a", "b"));
    }
}
