//! The uniform response contract `{"success": bool, "data": {...}, "message": str|null}`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RpcError;

/// The uniform response contract `{"success": bool, "data": ..., "message": ...}`: `data`
/// is never `null` (an envelope without data, such as a failure, carries `{}`).
///
/// ```
/// use messaging_patterns::rpc::Envelope;
/// let ok = Envelope::ok(42);
/// assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"success":true,"data":42,"message":null}"#);
/// assert_eq!(ok.into_result().unwrap(), Some(42));
///
/// let failed = Envelope::<u32>::error("no stock");
/// assert_eq!(serde_json::to_string(&failed).unwrap(), r#"{"success":false,"data":{},"message":"no stock"}"#);
///
/// let failed: Envelope<u32> = serde_json::from_str(r#"{"success":false,"data":{},"message":"no stock"}"#).unwrap();
/// assert_eq!(failed.into_result().unwrap_err().to_string(), "the server failed: no stock");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(bound(serialize = "T: Serialize"))]
pub struct Envelope<T> {
    /// True when the call succeeded.
    pub success: bool,
    /// The response, on success; written as `{}` when there is none.
    #[serde(serialize_with = "data_or_empty")]
    pub data: Option<T>,
    /// A human-readable message; the error on failure.
    pub message: Option<String>,
}

fn data_or_empty<T: Serialize, S: Serializer>(data: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match data {
        Some(data) => data.serialize(s),
        None => serde_json::Map::new().serialize(s),
    }
}

/// The envelope as it is read: `data` as any JSON first, since a failure's `{}` need not be
/// a `T`.
#[derive(Deserialize)]
struct RawEnvelope {
    success: bool,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    message: Option<String>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawEnvelope::deserialize(deserializer)?;
        let empty = raw.data.is_null() || raw.data.as_object().is_some_and(|o| o.is_empty());
        let data = match serde_json::from_value::<T>(raw.data) {
            Ok(data) => Some(data),
            // A failure's data, or a success's `{}`/null, that is not a `T`: no data.
            Err(_) if empty || !raw.success => None,
            Err(e) => return Err(serde::de::Error::custom(format!("data: {e}"))),
        };
        Ok(Self {
            success: raw.success,
            data,
            message: raw.message,
        })
    }
}

impl<T> Envelope<T> {
    /// A success carrying `data`.
    pub fn ok(data: T) -> Self {
        Self {
            success: true,
            data: Some(data),
            message: None,
        }
    }

    /// A failure with its message (and `{}` as its data).
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            success: false,
            data: None,
            message: Some(message.into()),
        }
    }

    /// A success or a failure from a handler's result.
    pub fn from_result<E: std::fmt::Display>(result: Result<T, E>) -> Self {
        match result {
            Ok(data) => Self::ok(data),
            Err(e) => Self::error(e.to_string()),
        }
    }

    /// The data of a success (`None` when it carried none), or [`RpcError::Remote`] with the
    /// message of a failure.
    ///
    /// # Errors
    /// [`RpcError::Remote`] when `success` is false.
    pub fn into_result(self) -> Result<Option<T>, RpcError> {
        if self.success {
            Ok(self.data)
        } else {
            Err(RpcError::Remote(self.message.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_never_null() {
        let none: Envelope<u8> = Envelope {
            success: true,
            data: None,
            message: None,
        };
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"success":true,"data":{},"message":null}"#
        );
        let read: Envelope<u8> = serde_json::from_str(r#"{"success":true,"data":{}}"#).unwrap();
        assert_eq!(read.data, None);
        assert!(serde_json::from_str::<Envelope<u8>>(r#"{"success":true,"data":"x"}"#).is_err());
    }
}
