//! What a client connection asks for: credentials, virtual host, limits, deadlines.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;

use crate::table::{FieldTable, FieldValue};
use crate::types::LongStr;

/// The SASL mechanism and its credentials.
///
/// `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sasl {
    /// `PLAIN`: `\0user\0password`, what RabbitMQ uses by default.
    Plain {
        /// The user name.
        username: String,
        /// The password (or an OAuth 2 token).
        password: String,
    },
    /// `AMQPLAIN`: RabbitMQ's older mechanism, the credentials as a field table.
    AmqPlain {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// `EXTERNAL`: the identity comes from outside AMQP, such as a TLS client certificate.
    External,
}

impl Sasl {
    /// `PLAIN` with these credentials.
    pub fn plain(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::Plain {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The mechanism's name as the broker lists it.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Self::Plain { .. } => "PLAIN",
            Self::AmqPlain { .. } => "AMQPLAIN",
            Self::External => "EXTERNAL",
        }
    }

    /// The response to send in `connection.start-ok`, and again to any `connection.secure`
    /// challenge (none of these mechanisms has a second step, so the answer is the same).
    pub(crate) fn response(&self) -> LongStr {
        match self {
            Self::Plain { username, password } => {
                LongStr::from(format!("\0{username}\0{password}"))
            }
            Self::AmqPlain { username, password } => {
                // AMQPLAIN's response is a field table's entries without the length prefix.
                let mut table = FieldTable::new();
                table.insert_short(
                    crate::ShortStr::from_static("LOGIN"),
                    username.as_str().into(),
                );
                table.insert_short(
                    crate::ShortStr::from_static("PASSWORD"),
                    password.as_str().into(),
                );
                let mut out = BytesMut::with_capacity(table.encoded_len());
                table.encode(&mut out);
                LongStr(out.split_off(4).freeze())
            }
            Self::External => LongStr::new(),
        }
    }
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain { username, .. } | Self::AmqPlain { username, .. } => f
                .debug_struct(self.mechanism())
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::External => f.write_str("EXTERNAL"),
        }
    }
}

/// How a client connection is set up. `Default` is guest/guest on `/`, as RabbitMQ ships.
///
/// ```
/// use amqp_wire::connection::{ClientConfig, Sasl};
/// let config = ClientConfig {
///     sasl: Sasl::plain("app", "secret"),
///     virtual_host: "orders".into(),
///     heartbeat: Some(10),
///     ..ClientConfig::default()
/// };
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Mechanism and credentials.
    pub sasl: Sasl,
    /// The virtual host to open.
    pub virtual_host: String,
    /// Shown in the management UI and `rabbitmqctl list_connections`.
    pub connection_name: Option<String>,
    /// Extra client properties; `product`, `version`, `platform` and `capabilities` are added.
    pub client_properties: FieldTable,
    /// The highest channel number wanted (0: as many as the broker allows).
    pub channel_max: u16,
    /// The largest frame wanted, overhead included; 0 means [`DEFAULT_FRAME_MAX`]. At least
    /// 8192. The broker's offer can lower it, never raise it: an offer of 0 ("no limit") or
    /// of more gets this value, so what one frame may make us buffer is our choice.
    pub frame_max: u32,
    /// The heartbeat interval wanted in seconds: `None` takes the broker's, or
    /// [`DEFAULT_HEARTBEAT`] when the broker offers 0 (so a dead peer is still noticed);
    /// `Some(0)` turns heartbeats off; `Some(n)` takes the lower of `n` and the broker's.
    pub heartbeat: Option<u16>,
    /// The largest inbound message body accepted; a larger one closes its channel before any
    /// of its body is buffered.
    pub max_message_size: u64,
    /// How long the handshake may take, from [`super::Connection::client`] to `open-ok`.
    pub handshake_timeout: Duration,
    /// How long to wait for `close-ok` after sending a `close`.
    pub close_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            sasl: Sasl::plain("guest", "guest"),
            virtual_host: "/".into(),
            connection_name: None,
            client_properties: FieldTable::new(),
            channel_max: 0,
            frame_max: 0,
            heartbeat: None,
            max_message_size: 128 << 20,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(30),
        }
    }
}

/// The capabilities a client advertises in `connection.start-ok`; the three RabbitMQ acts on
/// are `consumer_cancel_notify`, `connection.blocked` and `authentication_failure_close`.
pub(crate) const CAPABILITIES: [&str; 8] = [
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
];

impl ClientConfig {
    /// The `client-properties` table of `connection.start-ok`.
    pub(crate) fn client_properties(&self) -> FieldTable {
        let mut props = self.client_properties.clone();
        let mut defaults: Vec<(&str, FieldValue)> = vec![
            ("product", "amqp-rs".into()),
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("platform", "Rust".into()),
            ("information", "https://example.invalid/amqp-rs".into()),
            (
                "copyright",
                "The amqp-rs developers; MIT OR Apache-2.0".into(),
            ),
        ];
        if let Some(name) = &self.connection_name {
            // RabbitMQ reads the name as a top-level key, not inside `capabilities`.
            defaults.push(("connection_name", name.as_str().into()));
        }
        for (key, value) in defaults {
            if props.get(key).is_none() {
                props.insert(key, value);
            }
        }
        props.insert(
            "capabilities",
            CAPABILITIES
                .into_iter()
                .map(|c| (c, true))
                .collect::<FieldTable>(),
        );
        props
    }
}

/// Negotiates one tune value the way RabbitMQ's own clients do: 0 means "no limit" on either
/// side, so if one side says 0 the other side's value stands; otherwise the lower one wins.
pub(crate) fn negotiate<T: Ord + Default + Copy>(client: T, server: T) -> T {
    if client == T::default() || server == T::default() {
        client.max(server)
    } else {
        client.min(server)
    }
}

/// The `frame_max` a client asks for when its configuration says 0: 128 KiB, RabbitMQ's own
/// default, and what the Java client proposes.
pub const DEFAULT_FRAME_MAX: u32 = 128 * 1024;

/// The heartbeat interval (seconds) a client uses when neither it nor the broker asked for
/// one, as the Java client does.
pub const DEFAULT_HEARTBEAT: u16 = 60;

/// The `frame_max` the client proposes: its configured one (0: the default), at least
/// `FRAME-MIN-SIZE`.
pub(crate) fn clamp_frame_max(frame_max: u32) -> u32 {
    if frame_max == 0 {
        DEFAULT_FRAME_MAX
    } else {
        frame_max.max(CLIENT_FRAME_MIN)
    }
}

/// The agreed `frame_max`: the broker may lower ours but never raise it, and its 0 ("no
/// limit") gets ours.
pub(crate) fn negotiate_frame_max(ours: u32, offer: u32) -> u32 {
    if offer == 0 { ours } else { ours.min(offer) }
}

/// The agreed heartbeat: see [`ClientConfig::heartbeat`].
pub(crate) fn negotiate_heartbeat(wanted: Option<u16>, offer: u16) -> u16 {
    match wanted {
        None if offer == 0 => DEFAULT_HEARTBEAT,
        None => offer,
        Some(0) => 0,
        Some(wanted) => negotiate(wanted, offer),
    }
}

/// The smallest `frame_max` the client asks for. The spec's minimum is 4096
/// ([`crate::frame::FRAME_MIN_SIZE`]), but RabbitMQ 4.1 and later refuse less than 8192 (and
/// reset the socket without a close), while 3.x accepts 8192 too.
pub(crate) const CLIENT_FRAME_MIN: u32 = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_follows_rabbitmq_rules() {
        // RabbitMQ's three tune cases: either side 0, or both set.
        assert_eq!(
            (
                negotiate(0u16, 2047),
                negotiate(0u32, 131_072),
                negotiate(0u16, 60)
            ),
            (2047, 131_072, 60)
        );
        assert_eq!(
            (
                negotiate(100u16, 2047),
                negotiate(65_536u32, 131_072),
                negotiate(10u16, 60)
            ),
            (100, 65_536, 10)
        );
        assert_eq!(negotiate(0u16, 0), 0);
        assert_eq!(clamp_frame_max(100), 8192);
        assert_eq!(clamp_frame_max(0), DEFAULT_FRAME_MAX);
        // Ours stands against a broker's "no limit" or a larger offer.
        assert_eq!(negotiate_frame_max(DEFAULT_FRAME_MAX, 0), DEFAULT_FRAME_MAX);
        assert_eq!(negotiate_frame_max(16_384, u32::MAX), 16_384);
        assert_eq!(negotiate_frame_max(DEFAULT_FRAME_MAX, 8192), 8192);
        // No heartbeat from the broker: ours, unless the application turned them off.
        assert_eq!(negotiate_heartbeat(None, 0), DEFAULT_HEARTBEAT);
        assert_eq!(negotiate_heartbeat(None, 30), 30);
        assert_eq!(negotiate_heartbeat(Some(0), 30), 0);
        assert_eq!(negotiate_heartbeat(Some(10), 0), 10);
    }

    #[test]
    fn plain_and_amqplain_responses() {
        assert_eq!(
            Sasl::plain("guest", "pw").response(),
            LongStr::from("\0guest\0pw")
        );
        let amqplain = Sasl::AmqPlain {
            username: "u".into(),
            password: "p".into(),
        }
        .response();
        assert_eq!(
            &amqplain.as_bytes()[..],
            b"\x05LOGINS\x00\x00\x00\x01u\x08PASSWORDS\x00\x00\x00\x01p"
        );
        assert!(Sasl::External.response().is_empty());
    }

    #[test]
    fn client_properties_carry_name_and_capabilities() {
        let config = ClientConfig {
            connection_name: Some("orders-1".into()),
            ..Default::default()
        };
        let props = config.client_properties();
        assert_eq!(
            props.get("connection_name").and_then(FieldValue::as_str),
            Some("orders-1")
        );
        let Some(FieldValue::Table(caps)) = props.get("capabilities") else {
            panic!("no capabilities")
        };
        for cap in CAPABILITIES {
            assert_eq!(caps.get(cap), Some(&FieldValue::Bool(true)), "{cap}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!(
            "{:?}",
            ClientConfig {
                sasl: Sasl::plain("u", "hunter2"),
                ..Default::default()
            }
        );
        assert!(!shown.contains("hunter2"));
    }
}
