//! Newtypes for ids and the two AMQP string types.

use std::fmt;

use bytes::Bytes;

/// A channel number. Channel 0 is the connection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChannelId(pub u16);

impl ChannelId {
    /// Channel 0, which carries the `connection` class and heartbeats.
    pub const CONNECTION: Self = Self(0);
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A delivery tag: per channel, starting at 1, for deliveries and for publisher confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DeliveryTag(pub u64);

impl fmt::Display for DeliveryTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The version a protocol header names: `AMQP` followed by four octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProtocolVersion(pub [u8; 4]);

impl ProtocolVersion {
    /// AMQP 0-9-1: the octets `0 0 9 1`.
    pub const AMQP_0_9_1: Self = Self([0, 0, 9, 1]);

    /// The 8 octets of the protocol header for this version.
    ///
    /// ```
    /// use amqp_wire::ProtocolVersion;
    /// assert_eq!(&ProtocolVersion::AMQP_0_9_1.header(), b"AMQP\x00\x00\x09\x01");
    /// ```
    pub fn header(self) -> [u8; 8] {
        let [a, b, c, d] = self.0;
        [b'A', b'M', b'Q', b'P', a, b, c, d]
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}-{b}-{c}-{d}")
    }
}

/// A short string: at most 255 octets, length-prefixed by one octet on the wire.
///
/// The octets are kept as [`Bytes`]: a decoded `ShortStr` is a slice of the frame it came in,
/// not a copy. UTF-8 is not assumed; [`ShortStr::to_str`] checks it on demand.
///
/// ```
/// use amqp_wire::ShortStr;
/// let s = ShortStr::try_from("amq.direct").unwrap();
/// assert_eq!(s.to_str(), Ok("amq.direct"));
/// assert!(ShortStr::try_from("x".repeat(256)).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

/// A string given for a [`ShortStr`] was longer than 255 octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("short string of {0} octets is longer than 255")]
pub struct ShortStrTooLong(pub usize);

impl ShortStr {
    /// The largest length a short string may have.
    pub const MAX_LEN: usize = 255;

    /// An empty short string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A short string from a `'static` literal, checked at compile time when used in a `const`.
    ///
    /// # Panics
    /// When `s` is longer than 255 octets (a bug in the caller's literal).
    pub const fn from_static(s: &'static str) -> Self {
        assert!(
            s.len() <= Self::MAX_LEN,
            "short string longer than 255 octets"
        );
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps octets, refusing more than 255.
    ///
    /// # Errors
    /// [`ShortStrTooLong`] when `b` is longer than 255 octets.
    pub fn from_bytes(b: Bytes) -> Result<Self, ShortStrTooLong> {
        if b.len() > Self::MAX_LEN {
            return Err(ShortStrTooLong(b.len()));
        }
        Ok(Self(b))
    }

    /// Wraps octets the codec has already bounded by the one-octet length prefix.
    pub(crate) fn from_wire(b: Bytes) -> Self {
        debug_assert!(b.len() <= Self::MAX_LEN);
        Self(b)
    }

    /// The octets.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The string, if it is UTF-8.
    ///
    /// # Errors
    /// When the octets are not valid UTF-8.
    pub fn to_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// The number of octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<&str> for ShortStr {
    type Error = ShortStrTooLong;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<String> for ShortStr {
    type Error = ShortStrTooLong;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::from_bytes(Bytes::from(s))
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

/// A long string: any octets, length-prefixed by four octets on the wire.
///
/// Like [`ShortStr`], a decoded `LongStr` is a slice of the received frame.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongStr(pub Bytes);

impl LongStr {
    /// An empty long string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// The octets.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The string, if it is UTF-8.
    ///
    /// # Errors
    /// When the octets are not valid UTF-8.
    pub fn to_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// The number of octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for LongStr {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<Bytes> for LongStr {
    fn from(b: Bytes) -> Self {
        Self(b)
    }
}

impl From<Vec<u8>> for LongStr {
    fn from(b: Vec<u8>) -> Self {
        Self(Bytes::from(b))
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => fmt::Debug::fmt(s, f),
            Err(_) => write!(f, "<{} octets>", self.0.len()),
        }
    }
}

impl fmt::Display for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}
