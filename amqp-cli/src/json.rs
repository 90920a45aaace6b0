//! Messages as JSON (one object per line for `consume --json`, `get --json`, `rpc --json`) and
//! as text for people.
//!
//! ```text
//! {"exchange":"","routing_key":"jobs","redelivered":false,"delivery_tag":1,
//!  "body":"hello","body_encoding":"utf8","body_size":5,
//!  "properties":{"content_type":"text/plain","content_encoding":null,...,"cluster_id":null},
//!  "headers":{"retries":{"type":"i32","value":5}}}
//! ```
//!
//! Every property is present, `null` when the message has none; `headers` is `{}` when it has
//! none. A body that is not UTF-8 is base64 with `"body_encoding": "base64"`.

use std::fmt::Write as _;

use amqp_client::{BasicProperties, Delivery, ShortStr};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::headers;

/// Where a message came from: what `basic.deliver`, `basic.get-ok` or `basic.return` say
/// besides the content.
#[derive(Clone, Debug)]
pub struct Envelope<'a> {
    /// The exchange it was published to.
    pub exchange: &'a ShortStr,
    /// The routing key it was published with.
    pub routing_key: &'a ShortStr,
    /// True when delivered before and not acknowledged.
    pub redelivered: bool,
    /// The delivery tag, when it was delivered (not for a returned message).
    pub delivery_tag: Option<u64>,
    /// Messages left in the queue (`basic.get-ok` only).
    pub message_count: Option<u32>,
}

impl<'a> Envelope<'a> {
    /// The envelope of a delivery.
    pub fn of(d: &'a Delivery) -> Self {
        Self {
            exchange: &d.exchange,
            routing_key: &d.routing_key,
            redelivered: d.redelivered,
            delivery_tag: Some(d.delivery_tag.0),
            message_count: None,
        }
    }
}

/// A short string as JSON: the text when UTF-8, else its octets in base64.
pub fn short_json(s: &ShortStr) -> Value {
    match s.to_str() {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "encoding": "base64", "value": BASE64.encode(s.as_bytes()) }),
    }
}

/// A body as JSON: `(value, encoding)` with encoding `utf8` or `base64`.
pub fn body_json(body: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(body) {
        Ok(s) => (Value::String(s.to_owned()), "utf8"),
        Err(_) => (Value::String(BASE64.encode(body)), "base64"),
    }
}

/// Every property but `headers`, each `null` when absent, under its AMQP name.
pub fn properties_json(p: &BasicProperties) -> Value {
    let s = |v: &Option<ShortStr>| v.as_ref().map_or(Value::Null, short_json);
    json!({
        "content_type": s(&p.content_type),
        "content_encoding": s(&p.content_encoding),
        "delivery_mode": p.delivery_mode,
        "priority": p.priority,
        "correlation_id": s(&p.correlation_id),
        "reply_to": s(&p.reply_to),
        "expiration": s(&p.expiration),
        "message_id": s(&p.message_id),
        "timestamp": p.timestamp,
        "type": s(&p.kind),
        "user_id": s(&p.user_id),
        "app_id": s(&p.app_id),
        "cluster_id": s(&p.cluster_id),
    })
}

/// The headers with their AMQP types, `{}` when there are none.
pub fn headers_json(p: &BasicProperties) -> Value {
    p.headers
        .as_ref()
        .map_or_else(|| Value::Object(Map::new()), headers::table_to_json)
}

/// A whole message as one JSON object.
pub fn message_json(envelope: &Envelope<'_>, properties: &BasicProperties, body: &[u8]) -> Value {
    let (body_value, encoding) = body_json(body);
    let mut obj = Map::new();
    obj.insert("exchange".into(), short_json(envelope.exchange));
    obj.insert("routing_key".into(), short_json(envelope.routing_key));
    obj.insert("redelivered".into(), envelope.redelivered.into());
    if let Some(tag) = envelope.delivery_tag {
        obj.insert("delivery_tag".into(), tag.into());
    }
    if let Some(count) = envelope.message_count {
        obj.insert("message_count".into(), count.into());
    }
    obj.insert("body".into(), body_value);
    obj.insert("body_encoding".into(), encoding.into());
    obj.insert("body_size".into(), body.len().into());
    obj.insert("properties".into(), properties_json(properties));
    obj.insert("headers".into(), headers_json(properties));
    Value::Object(obj)
}

/// The properties that are set, as `name=value` pairs separated by spaces (headers in the
/// `{key:type=value, ...}` form).
pub fn properties_text(p: &BasicProperties) -> String {
    let mut out = String::new();
    let mut s = |name: &str, v: &Option<ShortStr>| {
        if let Some(v) = v {
            let _ = write!(out, " {name}={:?}", v.to_string());
        }
    };
    s("content_type", &p.content_type);
    s("content_encoding", &p.content_encoding);
    s("correlation_id", &p.correlation_id);
    s("reply_to", &p.reply_to);
    s("expiration", &p.expiration);
    s("message_id", &p.message_id);
    s("type", &p.kind);
    s("user_id", &p.user_id);
    s("app_id", &p.app_id);
    s("cluster_id", &p.cluster_id);
    let mut n = |name: &str, v: Option<u64>| {
        if let Some(v) = v {
            let _ = write!(out, " {name}={v}");
        }
    };
    n("delivery_mode", p.delivery_mode.map(u64::from));
    n("priority", p.priority.map(u64::from));
    n("timestamp", p.timestamp);
    if let Some(h) = &p.headers {
        let _ = write!(out, " headers={}", headers::table_text(h));
    }
    out.trim_start().to_owned()
}

/// One line that describes a message for people: where it came from and its properties.
pub fn envelope_text(envelope: &Envelope<'_>, properties: &BasicProperties, size: usize) -> String {
    let mut line = format!(
        "exchange={:?} routing_key={:?} redelivered={} size={size}",
        envelope.exchange.to_string(),
        envelope.routing_key.to_string(),
        envelope.redelivered,
    );
    let props = properties_text(properties);
    if !props.is_empty() {
        line.push(' ');
        line.push_str(&props);
    }
    line
}

#[cfg(test)]
mod tests {
    use amqp_client::{FieldTable, FieldValue};

    use super::*;

    fn envelope<'a>(exchange: &'a ShortStr, key: &'a ShortStr) -> Envelope<'a> {
        Envelope {
            exchange,
            routing_key: key,
            redelivered: true,
            delivery_tag: Some(7),
            message_count: None,
        }
    }

    #[test]
    fn a_message_has_every_property_and_typed_headers() {
        let (ex, key) = (
            ShortStr::from_static("amq.direct"),
            ShortStr::from_static("k"),
        );
        let mut headers = FieldTable::new();
        headers.insert("n", FieldValue::U16(3));
        let props = BasicProperties {
            content_type: Some(ShortStr::from_static("text/plain")),
            delivery_mode: Some(2),
            timestamp: Some(1_700_000_000),
            headers: Some(headers),
            ..Default::default()
        };
        let v = message_json(&envelope(&ex, &key), &props, b"hi");
        assert_eq!(v["exchange"], "amq.direct");
        assert_eq!(v["routing_key"], "k");
        assert_eq!(v["redelivered"], true);
        assert_eq!(v["delivery_tag"], 7);
        assert_eq!(
            (&v["body"], &v["body_encoding"]),
            (&json!("hi"), &json!("utf8"))
        );
        assert_eq!(v["properties"]["content_type"], "text/plain");
        assert_eq!(v["properties"]["delivery_mode"], 2);
        assert_eq!(v["properties"]["timestamp"], 1_700_000_000);
        assert_eq!(v["properties"]["reply_to"], Value::Null);
        assert_eq!(v["properties"].as_object().map(Map::len), Some(13));
        assert_eq!(v["headers"]["n"], json!({"type": "u16", "value": 3}));
        assert!(v.get("message_count").is_none());
    }

    #[test]
    fn a_binary_body_is_base64() {
        let (ex, key) = (ShortStr::new(), ShortStr::from_static("q"));
        let v = message_json(
            &envelope(&ex, &key),
            &BasicProperties::default(),
            &[0xff, 0],
        );
        assert_eq!(v["body"], "/wA=");
        assert_eq!(v["body_encoding"], "base64");
        assert_eq!(v["body_size"], 2);
        assert_eq!(v["headers"], json!({}));
    }

    #[test]
    fn text_lists_the_properties_that_are_set() {
        let props = BasicProperties {
            message_id: Some(ShortStr::from_static("m-1")),
            priority: Some(3),
            ..Default::default()
        };
        assert_eq!(properties_text(&props), r#"message_id="m-1" priority=3"#);
        let (ex, key) = (ShortStr::new(), ShortStr::from_static("q"));
        assert_eq!(
            envelope_text(&envelope(&ex, &key), &props, 4),
            r#"exchange="" routing_key="q" redelivered=true size=4 message_id="m-1" priority=3"#
        );
    }
}
