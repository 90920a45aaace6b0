//! The lines of the worker protocol (docs/dispatcher-worker-protocol.md), and AMQP values
//! as JSON: byte strings (`x` values) as `{"$bytes": BASE64}`, other values as themselves.

use amqp_client::{BasicProperties, FieldArray, FieldTable, FieldValue, ShortStr};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::dispatcher::handler::{Message, number_properties, string_properties};

/// A line from the worker.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum FromWorker {
    /// Imported, started up, instance created.
    Ready {
        #[serde(default)]
        pid: Option<u32>,
    },
    /// The message is to be acked.
    Ack { id: u64 },
    /// The message is to be nacked.
    Nack {
        id: u64,
        #[serde(default = "yes")]
        requeue: bool,
    },
    /// The message is to be rejected.
    Reject {
        id: u64,
        #[serde(default = "yes")]
        requeue: bool,
    },
    /// A message to publish; the worker waits for `published` or `publish_failed`.
    Publish {
        id: u64,
        exchange: String,
        routing_key: String,
        #[serde(default)]
        headers: Map<String, Value>,
        #[serde(default)]
        properties: Map<String, Value>,
        body: String,
    },
    /// `consume` returned.
    Done { id: u64 },
    /// `consume` raised; the worker has shut the instance down and made a new one.
    Failed { id: u64, error: String },
    /// The worker cannot go on (import or startup failed); it exits.
    Fatal { error: String },
}

fn yes() -> bool {
    true
}

impl FromWorker {
    /// The message the line is about, if it is about one.
    pub(super) fn id(&self) -> Option<u64> {
        match self {
            Self::Ack { id }
            | Self::Nack { id, .. }
            | Self::Reject { id, .. }
            | Self::Publish { id, .. }
            | Self::Done { id }
            | Self::Failed { id, .. } => Some(*id),
            Self::Ready { .. } | Self::Fatal { .. } => None,
        }
    }
}

/// The `message` line for a delivery.
pub(super) fn message_line(id: u64, message: &Message, delivery_tag: u64) -> Value {
    json!({
        "type": "message",
        "id": id,
        "body": BASE64.encode(&message.body),
        "properties": properties_json(&message.properties),
        "delivery_info": {
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "redelivered": message.redelivered,
            "delivery_tag": delivery_tag,
        },
    })
}

fn short(value: Option<&ShortStr>) -> Option<Value> {
    value.map(|s| match s.to_str() {
        Ok(text) => Value::from(text),
        Err(_) => bytes_json(s.as_bytes()),
    })
}

/// The properties that are set, by their pika names.
fn properties_json(p: &BasicProperties) -> Value {
    let mut map = Map::new();
    for (name, value) in string_properties(p) {
        if let Some(value) = short(value) {
            map.insert(name.to_owned(), value);
        }
    }
    for (name, value) in number_properties(p) {
        if let Some(n) = value {
            map.insert(name.to_owned(), n.into());
        }
    }
    if let Some(headers) = &p.headers {
        map.insert("headers".to_owned(), table_json(headers));
    }
    Value::Object(map)
}

fn bytes_json(bytes: &[u8]) -> Value {
    json!({ "$bytes": BASE64.encode(bytes) })
}

fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => (*b).into(),
        FieldValue::F32(f) => f64::from(*f).into(),
        FieldValue::F64(f) => (*f).into(),
        FieldValue::LongStr(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => text.into(),
            Err(_) => bytes_json(s.as_bytes()),
        },
        FieldValue::Bytes(b) => bytes_json(b),
        FieldValue::Timestamp(t) => (*t).into(),
        FieldValue::Table(t) => table_json(t),
        FieldValue::Array(a) => Value::Array(a.0.iter().map(value_json).collect()),
        FieldValue::Decimal(d) => format!("{d:?}").into(),
        FieldValue::Void => Value::Null,
        other => other.as_i64().map_or(Value::Null, Value::from),
    }
}

/// A JSON value from the worker as a header value.
pub(super) fn json_value(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => FieldValue::from(s.as_str()),
        Value::Array(items) => {
            FieldValue::Array(FieldArray(items.iter().map(json_value).collect()))
        }
        Value::Object(map) => match (map.len(), map.get("$bytes").and_then(Value::as_str)) {
            (1, Some(encoded)) => match BASE64.decode(encoded) {
                Ok(bytes) => FieldValue::Bytes(bytes.into()),
                Err(_) => FieldValue::from(encoded),
            },
            _ => FieldValue::Table(json_table(map)),
        },
    }
}

/// A JSON object from the worker as a field table (keys past 255 octets are left out).
pub(super) fn json_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::new();
    for (key, value) in map {
        if let Ok(key) = ShortStr::try_from(key.as_str()) {
            table.insert_short(key, json_value(value));
        }
    }
    table
}

/// The properties of a message a worker publishes: its headers, and the string and number
/// properties it names (`content_type`, `delivery_mode`, `correlation_id`, ...).
pub(super) fn publish_properties(
    headers: &Map<String, Value>,
    props: &Map<String, Value>,
) -> BasicProperties {
    let text = |name: &str| {
        props
            .get(name)
            .and_then(Value::as_str)
            .and_then(|s| ShortStr::try_from(s).ok())
    };
    let number = |name: &str| {
        props
            .get(name)
            .and_then(Value::as_u64)
            .and_then(|n| u8::try_from(n).ok())
    };
    BasicProperties {
        headers: (!headers.is_empty()).then(|| json_table(headers)),
        content_type: text("content_type"),
        content_encoding: text("content_encoding"),
        correlation_id: text("correlation_id"),
        reply_to: text("reply_to"),
        expiration: text("expiration"),
        message_id: text("message_id"),
        kind: text("type"),
        app_id: text("app_id"),
        delivery_mode: number("delivery_mode"),
        priority: number("priority"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_json() {
        let mut nested = FieldTable::new();
        nested.insert("n", 3i32);
        let mut headers = FieldTable::new();
        headers.insert("s", "text");
        headers.insert("raw", FieldValue::Bytes(vec![0xff, 0].into()));
        headers.insert("t", nested);
        headers.insert("b", true);
        let json = table_json(&headers);
        assert_eq!(json["s"], "text");
        assert_eq!(json["raw"], json!({"$bytes": "/wA="}));
        assert_eq!(json["t"]["n"], 3);
        let back = json_table(json.as_object().unwrap());
        assert_eq!(back.get("s").and_then(FieldValue::as_str), Some("text"));
        assert_eq!(
            back.get("raw"),
            Some(&FieldValue::Bytes(vec![0xff, 0].into()))
        );
        assert_eq!(back.get("b"), Some(&FieldValue::Bool(true)));
    }

    #[test]
    fn lines_from_the_worker() {
        let line: FromWorker = serde_json::from_str(r#"{"type":"nack","id":4}"#).unwrap();
        assert!(matches!(
            line,
            FromWorker::Nack {
                id: 4,
                requeue: true
            }
        ));
        let line: FromWorker = serde_json::from_str(r#"{"type":"ready","pid":12}"#).unwrap();
        assert!(matches!(line, FromWorker::Ready { pid: Some(12) }));
        assert!(serde_json::from_str::<FromWorker>(r#"{"type":"explode"}"#).is_err());
    }
}
