//! The `connection` class (10).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ReplyCode;
use std::fmt;

use crate::frame::method::Args;
use crate::frame::wire::{
    PResult, long, long_str, long_str_len, octet, put_long_bytes, put_short_str, short, short_str,
    short_str_len,
};
use crate::table::FieldTable;
use crate::types::{LongStr, ShortStr};

/// `connection.start`: the server's greeting, offering its version, mechanisms and locales.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionStart {
    /// The protocol's major version: 0.
    pub version_major: u8,
    /// The protocol's minor version: 9.
    pub version_minor: u8,
    /// The server's properties: `product`, `version`, `capabilities`, ...
    pub server_properties: FieldTable,
    /// The SASL mechanisms offered, separated by spaces (`PLAIN AMQPLAIN`).
    pub mechanisms: LongStr,
    /// The message locales offered, separated by spaces (`en_US`).
    pub locales: LongStr,
}

impl Default for ConnectionStart {
    fn default() -> Self {
        Self {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::new(),
            mechanisms: LongStr(Bytes::from_static(b"PLAIN")),
            locales: LongStr(Bytes::from_static(b"en_US")),
        }
    }
}

impl Args for ConnectionStart {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, version_major) = octet(i)?;
        let (i, version_minor) = octet(i)?;
        let (i, server_properties) = FieldTable::decode_from(src, i)?;
        let (i, mechanisms) = long_str(src, i)?;
        let (i, locales) = long_str(src, i)?;
        let start = Self {
            version_major,
            version_minor,
            server_properties,
            mechanisms,
            locales,
        };
        Ok((i, start))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.version_major);
        dst.put_u8(self.version_minor);
        self.server_properties.encode(dst);
        put_long_bytes(dst, self.mechanisms.as_bytes());
        put_long_bytes(dst, self.locales.as_bytes());
    }
    fn encoded_len(&self) -> usize {
        2 + self.server_properties.encoded_len()
            + long_str_len(self.mechanisms.as_bytes())
            + long_str_len(self.locales.as_bytes())
    }
}

/// `connection.start-ok`: the client's properties, chosen mechanism, response and locale.
#[derive(Clone, PartialEq)]
pub struct ConnectionStartOk {
    /// The client's properties: `product`, `capabilities`, `connection_name`, ...
    pub client_properties: FieldTable,
    /// The chosen SASL mechanism, one of those offered.
    pub mechanism: ShortStr,
    /// The SASL response; for `PLAIN`, `\0user\0password`.
    pub response: LongStr,
    /// The chosen locale, one of those offered.
    pub locale: ShortStr,
}

impl Default for ConnectionStartOk {
    fn default() -> Self {
        Self {
            client_properties: FieldTable::new(),
            mechanism: ShortStr::from_static("PLAIN"),
            response: LongStr::new(),
            locale: ShortStr::from_static("en_US"),
        }
    }
}

impl Args for ConnectionStartOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, client_properties) = FieldTable::decode_from(src, i)?;
        let (i, mechanism) = short_str(src, i)?;
        let (i, response) = long_str(src, i)?;
        let (i, locale) = short_str(src, i)?;
        Ok((
            i,
            Self {
                client_properties,
                mechanism,
                response,
                locale,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        self.client_properties.encode(dst);
        put_short_str(dst, &self.mechanism);
        put_long_bytes(dst, self.response.as_bytes());
        put_short_str(dst, &self.locale);
    }
    fn encoded_len(&self) -> usize {
        self.client_properties.encoded_len()
            + short_str_len(&self.mechanism)
            + long_str_len(self.response.as_bytes())
            + short_str_len(&self.locale)
    }
}

/// `connection.secure`: a SASL challenge from the server (never sent for `PLAIN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionSecure {
    /// The challenge, opaque to the codec.
    pub challenge: LongStr,
}

impl Args for ConnectionSecure {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, challenge) = long_str(src, i)?;
        Ok((i, Self { challenge }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_long_bytes(dst, self.challenge.as_bytes());
    }
    fn encoded_len(&self) -> usize {
        long_str_len(self.challenge.as_bytes())
    }
}

/// `connection.secure-ok`: the client's answer to a SASL challenge.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectionSecureOk {
    /// The response, opaque to the codec.
    pub response: LongStr,
}

impl Args for ConnectionSecureOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, response) = long_str(src, i)?;
        Ok((i, Self { response }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_long_bytes(dst, self.response.as_bytes());
    }
    fn encoded_len(&self) -> usize {
        long_str_len(self.response.as_bytes())
    }
}

/// `connection.tune`: the server's limits; 0 means "no limit" (or no heartbeats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionTune {
    /// The highest channel number the server allows.
    pub channel_max: u16,
    /// The largest frame the server accepts, overhead included.
    pub frame_max: u32,
    /// The heartbeat interval the server proposes, in seconds.
    pub heartbeat: u16,
}

impl Args for ConnectionTune {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, channel_max) = short(i)?;
        let (i, frame_max) = long(i)?;
        let (i, heartbeat) = short(i)?;
        Ok((
            i,
            Self {
                channel_max,
                frame_max,
                heartbeat,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(self.channel_max);
        dst.put_u32(self.frame_max);
        dst.put_u16(self.heartbeat);
    }
    fn encoded_len(&self) -> usize {
        8
    }
}

/// `connection.tune-ok`: the limits the client settles on, each within the server's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionTuneOk {
    /// The highest channel number the client will use.
    pub channel_max: u16,
    /// The largest frame either side may send, overhead included.
    pub frame_max: u32,
    /// The heartbeat interval in seconds; 0 turns heartbeats off.
    pub heartbeat: u16,
}

impl Args for ConnectionTuneOk {
    fn decode<'a>(_src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, channel_max) = short(i)?;
        let (i, frame_max) = long(i)?;
        let (i, heartbeat) = short(i)?;
        Ok((
            i,
            Self {
                channel_max,
                frame_max,
                heartbeat,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(self.channel_max);
        dst.put_u32(self.frame_max);
        dst.put_u16(self.heartbeat);
    }
    fn encoded_len(&self) -> usize {
        8
    }
}

/// `connection.open`: open a virtual host. The reserved `capabilities` and `insist` arguments
/// are written empty and clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionOpen {
    /// The virtual host to open, `/` by default.
    pub virtual_host: ShortStr,
}

impl Default for ConnectionOpen {
    fn default() -> Self {
        Self {
            virtual_host: ShortStr::from_static("/"),
        }
    }
}

impl Args for ConnectionOpen {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, virtual_host) = short_str(src, i)?;
        let (i, _capabilities) = short_str(src, i)?;
        let (i, _insist) = octet(i)?;
        Ok((i, Self { virtual_host }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.virtual_host);
        put_short_str(dst, &ShortStr::new());
        dst.put_u8(0);
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.virtual_host) + 1 + 1
    }
}

/// `connection.open-ok`: the virtual host is open. Its one argument, `known-hosts`, is reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionOpenOk;

impl Args for ConnectionOpenOk {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, _known_hosts) = short_str(src, i)?;
        Ok((i, Self))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &ShortStr::new());
    }
    fn encoded_len(&self) -> usize {
        1
    }
}

/// `connection.close`: close the connection, naming the method that failed (or 0/0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionClose {
    /// Why: 200 for a normal close, otherwise a hard error code.
    pub reply_code: ReplyCode,
    /// A human-readable reason.
    pub reply_text: ShortStr,
    /// The class of the method that caused the close, or 0.
    pub class_id: u16,
    /// The method that caused the close, or 0.
    pub method_id: u16,
}

impl Default for ConnectionClose {
    fn default() -> Self {
        Self {
            reply_code: ReplyCode::SUCCESS,
            reply_text: ShortStr::new(),
            class_id: 0,
            method_id: 0,
        }
    }
}

impl Args for ConnectionClose {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, reply_code) = short(i)?;
        let (i, reply_text) = short_str(src, i)?;
        let (i, class_id) = short(i)?;
        let (i, method_id) = short(i)?;
        Ok((
            i,
            Self {
                reply_code: ReplyCode(reply_code),
                reply_text,
                class_id,
                method_id,
            },
        ))
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(self.reply_code.0);
        put_short_str(dst, &self.reply_text);
        dst.put_u16(self.class_id);
        dst.put_u16(self.method_id);
    }
    fn encoded_len(&self) -> usize {
        2 + short_str_len(&self.reply_text) + 4
    }
}

/// `connection.close-ok`: confirms a `connection.close`; the socket may be closed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCloseOk;

/// `connection.blocked`: the server stopped reading from publishers (a resource alarm).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionBlocked {
    /// Why, such as `low on memory`.
    pub reason: ShortStr,
}

impl Args for ConnectionBlocked {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, reason) = short_str(src, i)?;
        Ok((i, Self { reason }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short_str(dst, &self.reason);
    }
    fn encoded_len(&self) -> usize {
        short_str_len(&self.reason)
    }
}

/// `connection.unblocked`: the alarm cleared; the server reads from publishers again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionUnblocked;

/// `connection.update-secret`: replace the secret (such as an OAuth token) of the connection.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectionUpdateSecret {
    /// The new secret.
    pub new_secret: LongStr,
    /// Why it is being replaced, for the server's log.
    pub reason: ShortStr,
}

impl Args for ConnectionUpdateSecret {
    fn decode<'a>(src: &Bytes, i: &'a [u8]) -> PResult<'a, Self> {
        let (i, new_secret) = long_str(src, i)?;
        let (i, reason) = short_str(src, i)?;
        Ok((i, Self { new_secret, reason }))
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_long_bytes(dst, self.new_secret.as_bytes());
        put_short_str(dst, &self.reason);
    }
    fn encoded_len(&self) -> usize {
        long_str_len(self.new_secret.as_bytes()) + short_str_len(&self.reason)
    }
}

/// `connection.update-secret-ok`: the server accepted the new secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionUpdateSecretOk;

/// What `Debug` shows instead of a credential, so that logging a method never leaks one.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for ConnectionStartOk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionStartOk")
            .field("client_properties", &self.client_properties)
            .field("mechanism", &self.mechanism)
            .field("response", &REDACTED)
            .field("locale", &self.locale)
            .finish()
    }
}

impl fmt::Debug for ConnectionSecureOk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSecureOk")
            .field("response", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for ConnectionUpdateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionUpdateSecret")
            .field("new_secret", &REDACTED)
            .field("reason", &self.reason)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::method::Method;
    use crate::frame::methods::testing::{check_vector, round_trip};
    use crate::table::FieldValue;

    fn props() -> FieldTable {
        let mut caps = FieldTable::new();
        caps.insert("consumer_cancel_notify", true);
        let mut props = FieldTable::new();
        props.insert("product", FieldValue::LongStr(LongStr::from("t")));
        props.insert("capabilities", caps);
        props
    }

    #[test]
    fn every_connection_method_round_trips() {
        round_trip(
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: props(),
                mechanisms: LongStr::from("PLAIN AMQPLAIN"),
                locales: LongStr::from("en_US"),
            }
            .into(),
        );
        round_trip(
            ConnectionStartOk {
                client_properties: props(),
                mechanism: ShortStr::from_static("AMQPLAIN"),
                response: LongStr::from("\0guest\0guest"),
                locale: ShortStr::from_static("de_DE"),
            }
            .into(),
        );
        round_trip(
            ConnectionSecure {
                challenge: LongStr::from(vec![0, 1, 2, 255]),
            }
            .into(),
        );
        round_trip(
            ConnectionSecureOk {
                response: LongStr::from("answer"),
            }
            .into(),
        );
        round_trip(
            ConnectionTune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            }
            .into(),
        );
        round_trip(
            ConnectionTuneOk {
                channel_max: 1,
                frame_max: 4096,
                heartbeat: 0,
            }
            .into(),
        );
        round_trip(
            ConnectionOpen {
                virtual_host: ShortStr::from_static("prod"),
            }
            .into(),
        );
        round_trip(ConnectionOpenOk.into());
        round_trip(
            ConnectionClose {
                reply_code: ReplyCode::CONNECTION_FORCED,
                reply_text: ShortStr::from_static("CONNECTION_FORCED - shutdown"),
                class_id: 60,
                method_id: 40,
            }
            .into(),
        );
        round_trip(ConnectionCloseOk.into());
        round_trip(
            ConnectionBlocked {
                reason: ShortStr::from_static("low on memory"),
            }
            .into(),
        );
        round_trip(ConnectionUnblocked.into());
        round_trip(
            ConnectionUpdateSecret {
                new_secret: LongStr::from("token"),
                reason: ShortStr::from_static("refresh"),
            }
            .into(),
        );
        round_trip(ConnectionUpdateSecretOk.into());
    }

    #[test]
    fn defaults_are_the_usual_values() {
        let start = ConnectionStart::default();
        assert_eq!((start.version_major, start.version_minor), (0, 9));
        assert_eq!(start.locales, LongStr::from("en_US"));
        let start_ok = ConnectionStartOk::default();
        assert_eq!(start_ok.mechanism, "PLAIN");
        assert_eq!(start_ok.locale, "en_US");
        assert_eq!(ConnectionOpen::default().virtual_host, "/");
        assert_eq!(ConnectionClose::default().reply_code, ReplyCode::SUCCESS);
    }

    #[test]
    fn tune_ok_vector_15() {
        let tune_ok = ConnectionTuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        };
        check_vector(
            0,
            tune_ok.into(),
            "01 00 00 00 00 00 0C 00 0A 00 1F 07 FF 00 02 00 00 00 3C CE",
        );
    }

    #[test]
    fn open_vector_16() {
        check_vector(
            0,
            ConnectionOpen::default().into(),
            "01 00 00 00 00 00 08 00 0A 00 28 01 2F 00 00 CE",
        );
    }

    #[test]
    fn open_ignores_reserved_capabilities_and_insist() {
        let payload = Bytes::from_static(b"\x00\x0a\x00\x28\x01/\x03abc\x01");
        assert_eq!(
            Method::decode(&payload),
            Ok(ConnectionOpen::default().into())
        );
    }

    #[test]
    fn open_ok_ignores_known_hosts() {
        let payload = Bytes::from_static(b"\x00\x0a\x00\x29\x04host");
        assert_eq!(Method::decode(&payload), Ok(ConnectionOpenOk.into()));
    }

    #[test]
    fn close_ok_vector_17() {
        check_vector(
            0,
            ConnectionCloseOk.into(),
            "01 00 00 00 00 00 04 00 0A 00 33 CE",
        );
    }

    #[test]
    fn start_ok_vector_20() {
        let start_ok = ConnectionStartOk {
            client_properties: props(),
            response: LongStr::from("\0guest\0guest"),
            ..Default::default()
        };
        let payload = check_vector(
            0,
            start_ok.into(),
            "01 00 00 00 00 00 5D 00 0A 00 0B 00 00 00 39 07 70 72 6F 64 75 63 74 53 00 00 00 01
             74 0C 63 61 70 61 62 69 6C 69 74 69 65 73 46 00 00 00 19 16 63 6F 6E 73 75 6D 65 72
             5F 63 61 6E 63 65 6C 5F 6E 6F 74 69 66 79 74 01 05 50 4C 41 49 4E 00 00 00 0C 00 67
             75 65 73 74 00 67 75 65 73 74 05 65 6E 5F 55 53 CE",
        );
        let Ok(Method::ConnectionStartOk(back)) = Method::decode(&payload) else {
            panic!("not a connection.start-ok");
        };
        let range = payload.as_ptr_range();
        assert!(
            range.contains(&back.response.as_bytes().as_ptr()),
            "response was copied"
        );
        assert!(
            range.contains(&back.mechanism.as_bytes().as_ptr()),
            "mechanism was copied"
        );
    }

    #[test]
    fn truncated_start_is_an_error() {
        let mut dst = BytesMut::new();
        Method::from(ConnectionStart::default()).encode(&mut dst);
        let whole = dst.freeze();
        for len in 4..whole.len() {
            assert!(
                Method::decode(&whole.slice(..len)).is_err(),
                "accepted {len} octets"
            );
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let start_ok = ConnectionStartOk {
            response: LongStr::from("\0guest\0s3cret"),
            ..Default::default()
        };
        let secret = ConnectionUpdateSecret {
            new_secret: LongStr::from("s3cret"),
            ..Default::default()
        };
        let secure = ConnectionSecureOk {
            response: LongStr::from("s3cret"),
        };
        for shown in [
            format!("{start_ok:?}"),
            format!("{secret:?}"),
            format!("{secure:?}"),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
