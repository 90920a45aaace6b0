//! [`Codec`]: how a pattern turns values into message bodies and back.
//!
//! Every pattern is generic over a codec. Encoding sets the message's `content_type`;
//! decoding first checks the content type of the message received, so a message written in
//! a format the codec cannot read is refused as [`CodecError::ContentType`] before its body
//! is looked at. The work queue dead-letters such a message (it would never get better by
//! being retried).
//!
//! ```
//! use messaging_patterns::codec::{Codec, Json, Raw};
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Resize { width: u32 }
//!
//! let json = Json::<Resize>::new();
//! let body = json.encode(&Resize { width: 640 })?;
//! assert_eq!(json.content_type(), "application/json");
//! assert_eq!(json.decode(Some("application/json"), body.clone())?, Resize { width: 640 });
//! assert!(json.decode(Some("text/xml"), body).is_err());
//!
//! assert_eq!(Raw.decode(Some("image/png"), "any octets".into())?, "any octets");
//! # Ok::<(), messaging_patterns::codec::CodecError>(())
//! ```

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or a body decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The message's content type is one this codec cannot read.
    #[error("content type {found:?} cannot be read by a codec for {expected:?}")]
    ContentType {
        /// The message's content type.
        found: String,
        /// The codec's content type.
        expected: &'static str,
    },
    /// The body is not valid JSON for the expected type.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Turns values into message bodies and back, and names their content type.
///
/// Implementations are cheap to clone and shared between tasks.
pub trait Codec: Clone + Send + Sync + 'static {
    /// The values this codec reads and writes.
    type Item: Send + 'static;

    /// The MIME type set as `content_type` on every message this codec encodes.
    fn content_type(&self) -> &'static str;

    /// True when a message with this content type can be read; a message without one is
    /// tried as the codec's own format.
    fn accepts(&self, content_type: Option<&str>) -> bool {
        content_type.is_none_or(|found| mime_essence(found) == self.content_type())
    }

    /// Encodes a value.
    ///
    /// # Errors
    /// When the value cannot be represented (a JSON map with non-string keys, ...).
    fn encode(&self, item: &Self::Item) -> Result<Bytes, CodecError>;

    /// Decodes a body after checking its content type with [`Codec::accepts`].
    ///
    /// # Errors
    /// [`CodecError::ContentType`] for a content type this codec cannot read, or the
    /// format's error for a malformed body.
    fn decode(&self, content_type: Option<&str>, body: Bytes) -> Result<Self::Item, CodecError> {
        if !self.accepts(content_type) {
            return Err(CodecError::ContentType {
                found: content_type.unwrap_or_default().to_owned(),
                expected: self.content_type(),
            });
        }
        self.decode_body(body)
    }

    /// Decodes a body whose content type was already accepted.
    ///
    /// # Errors
    /// The format's error for a malformed body.
    fn decode_body(&self, body: Bytes) -> Result<Self::Item, CodecError>;
}

/// `type/subtype` without parameters, lower case: `Application/JSON; charset=utf-8` gives
/// `application/json`.
fn mime_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// JSON through serde, as `application/json`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// A JSON codec for `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json<{}>", std::any::type_name::<T>())
    }
}

impl<T> Codec for Json<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = T;

    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn encode(&self, item: &T) -> Result<Bytes, CodecError> {
        Ok(serde_json::to_vec(item)?.into())
    }

    fn decode_body(&self, body: Bytes) -> Result<T, CodecError> {
        Ok(serde_json::from_slice(&body)?)
    }
}

/// The body as it is, as `application/octet-stream`. It reads messages of any content type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;

impl Codec for Raw {
    type Item = Bytes;

    fn content_type(&self) -> &'static str {
        "application/octet-stream"
    }

    fn accepts(&self, _content_type: Option<&str>) -> bool {
        true
    }

    fn encode(&self, item: &Bytes) -> Result<Bytes, CodecError> {
        Ok(item.clone())
    }

    fn decode_body(&self, body: Bytes) -> Result<Bytes, CodecError> {
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_accepts_parameters_and_case() {
        let json = Json::<u32>::new();
        assert!(json.accepts(Some("Application/JSON; charset=utf-8")));
        assert!(json.accepts(None));
        assert!(!json.accepts(Some("application/xml")));
        assert!(!json.accepts(Some("")));
    }

    #[test]
    fn json_round_trip_and_errors() {
        let json = Json::<Vec<u32>>::new();
        let body = json.encode(&vec![1, 2]).unwrap();
        assert_eq!(&body[..], b"[1,2]");
        assert_eq!(json.decode(None, body).unwrap(), vec![1, 2]);
        assert!(matches!(
            json.decode(Some("application/json"), Bytes::from_static(b"{")),
            Err(CodecError::Json(_))
        ));
        let err = json.decode(Some("text/plain"), Bytes::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "content type \"text/plain\" cannot be read by a codec for \"application/json\""
        );
    }

    #[test]
    fn raw_reads_anything() {
        let body = Bytes::from_static(b"\x00\xff");
        assert_eq!(Raw.decode(Some("x/y"), body.clone()).unwrap(), body);
        assert_eq!(Raw.encode(&body).unwrap(), body);
    }
}
