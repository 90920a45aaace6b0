//! What `amqp perf` publishes, and how a consumer reads back when a message was published.
//!
//! By default every body starts with the time it was published (nanoseconds since the run's
//! start, big-endian) and is zero-padded to its size. With `--body FILE` (the files' bytes,
//! in turn) or `--json-body` (a JSON object of the size asked for) the body is not ours to
//! stamp, so the time travels in the [`STAMP_HEADER`] header instead.

use std::time::Duration;

use amqp_client::{BasicProperties, Delivery, FieldTable, FieldValue, ShortStr};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use super::args::PerfArgs;
use crate::error::{CliError, Result};

/// Octets of the timestamp at the start of a stamped body.
pub(super) const STAMP_LEN: usize = 8;
/// The header that carries the publish time when the body is a file's or JSON.
pub const STAMP_HEADER: &str = "x-amqp-perf-sent-ns";

/// Where bodies come from.
#[derive(Debug, Clone)]
pub(super) enum Bodies {
    /// The publish time, zero-padded.
    Stamped,
    /// Files' contents, in turn.
    Files(Vec<Bytes>),
    /// A JSON object padded to the size.
    Json,
}

impl Bodies {
    /// The bodies `args` ask for (reading `--body` files now, once).
    ///
    /// # Errors
    /// [`CliError::Read`] for a file that cannot be read.
    pub(super) fn of(args: &PerfArgs) -> Result<Self> {
        if args.json_body {
            return Ok(Self::Json);
        }
        if args.body_files.is_empty() {
            return Ok(Self::Stamped);
        }
        let files = args.body_files.iter().map(|path| {
            std::fs::read(path)
                .map(Bytes::from)
                .map_err(|source| CliError::Read {
                    path: path.clone(),
                    source,
                })
        });
        files.collect::<Result<Vec<_>>>().map(Self::Files)
    }

    /// The body and properties of publish number `seq`, of `size` octets (files keep
    /// theirs), published `sent` after `epoch`; `base` holds the run's fixed properties.
    pub(super) fn message(
        &self,
        seq: u64,
        size: usize,
        sent: Duration,
        base: &BasicProperties,
    ) -> (Bytes, BasicProperties) {
        let nanos = u64::try_from(sent.as_nanos()).unwrap_or(u64::MAX);
        let body = match self {
            Self::Stamped => return (stamped_body(size, nanos), base.clone()),
            Self::Files(files) => {
                let at = usize::try_from(seq % files.len().max(1) as u64).unwrap_or(0);
                files.get(at).cloned().unwrap_or_default()
            }
            Self::Json => json_body(seq, nanos, size),
        };
        let mut headers = base.headers.clone().unwrap_or_default();
        headers.insert(
            STAMP_HEADER,
            FieldValue::I64(i64::try_from(nanos).unwrap_or(i64::MAX)),
        );
        let properties = BasicProperties {
            headers: Some(headers),
            ..base.clone()
        };
        (body, properties)
    }

    /// The content type these bodies have, when known.
    pub(super) fn content_type(&self, args: &PerfArgs) -> Option<ShortStr> {
        match self {
            Self::Json => Some(ShortStr::from_static("application/json")),
            Self::Files(_) => args
                .body_content_type
                .as_deref()
                .and_then(|t| ShortStr::try_from(t).ok()),
            Self::Stamped => None,
        }
    }
}

/// A body of `size` octets starting with `nanos`.
fn stamped_body(size: usize, nanos: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(size.max(STAMP_LEN));
    body.put_u64(nanos);
    body.resize(size.max(STAMP_LEN), 0);
    body.freeze()
}

/// `{"seq":N,"sent_ns":T,"data":"abc..."}` padded with `data` to `size` octets (or just the
/// object when `size` is smaller).
fn json_body(seq: u64, nanos: u64, size: usize) -> Bytes {
    let head = format!(r#"{{"seq":{seq},"sent_ns":{nanos},"data":""#);
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = BytesMut::with_capacity(head.len() + pad + tail.len());
    body.put_slice(head.as_bytes());
    body.extend((0..pad).map(|i| b'a' + (i % 26) as u8));
    body.put_slice(tail.as_bytes());
    body.freeze()
}

/// How long ago (on the run's clock) `delivery` was published, from its header or its
/// body's stamp; `None` for a message from elsewhere.
pub(super) fn latency(
    delivery: &Delivery,
    epoch: Instant,
    stamp_in_header: bool,
) -> Option<Duration> {
    let nanos = if stamp_in_header {
        let headers: &FieldTable = delivery.properties.headers.as_ref()?;
        match headers.get(STAMP_HEADER)? {
            FieldValue::I64(n) => u64::try_from(*n).ok()?,
            _ => return None,
        }
    } else {
        let stamp: [u8; STAMP_LEN] = delivery.body.get(..STAMP_LEN)?.try_into().ok()?;
        u64::from_be_bytes(stamp)
    };
    epoch.elapsed().checked_sub(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_size_asked_for() {
        let base = BasicProperties::default();
        let (body, props) = Bodies::Stamped.message(0, 64, Duration::from_nanos(7), &base);
        assert_eq!(body.len(), 64);
        assert_eq!(&body[..8], &7u64.to_be_bytes());
        assert!(props.headers.is_none());
        let (body, props) = Bodies::Json.message(3, 200, Duration::from_nanos(9), &base);
        assert_eq!(body.len(), 200);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (value["seq"].as_u64(), value["sent_ns"].as_u64()),
            (Some(3), Some(9))
        );
        let stamp = props.headers.unwrap();
        assert_eq!(stamp.get(STAMP_HEADER), Some(&FieldValue::I64(9)));
        let files = Bodies::Files(vec![Bytes::from_static(b"a"), Bytes::from_static(b"bb")]);
        let sizes: Vec<usize> = (0..3)
            .map(|i| files.message(i, 99, Duration::ZERO, &base).0.len())
            .collect();
        assert_eq!(sizes, [1, 2, 1]);
    }
}
