//! Every argument of every method, by name, for `amqp decode`.

use amqp_client::{FieldTable, ReplyCode, ShortStr};
use amqp_wire::{LongStr, Method};
use serde_json::{Map, Value, json};

use crate::headers;
use crate::json::body_json;

/// One method argument's value.
#[derive(Clone, Debug)]
pub enum Field<'a> {
    /// A short or long string (octets; shown as text when UTF-8).
    Str(&'a [u8]),
    /// A bit.
    Bool(bool),
    /// Any integer.
    Num(u64),
    /// A reply code.
    Code(ReplyCode),
    /// A field table.
    Table(&'a FieldTable),
    /// A credential, hidden: its length only.
    Secret(usize),
}

impl Field<'_> {
    /// The value as text: strings quoted, tables as `{key:type=value, ...}`.
    pub fn text(&self) -> String {
        match self {
            Self::Str(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Self::Bool(b) => b.to_string(),
            Self::Num(n) => n.to_string(),
            Self::Code(c) => c.0.to_string(),
            Self::Table(t) => headers::table_text(t),
            Self::Secret(n) => format!("<{n} octets, hidden>"),
        }
    }

    /// The value as JSON: strings as text (base64 objects when not UTF-8), tables typed.
    pub fn json(&self) -> Value {
        match self {
            Self::Str(b) => match body_json(b) {
                (v, "utf8") => v,
                (v, encoding) => json!({ "encoding": encoding, "value": v }),
            },
            Self::Bool(b) => json!(b),
            Self::Num(n) => json!(n),
            Self::Code(c) => json!(c.0),
            Self::Table(t) => headers::table_to_json(t),
            Self::Secret(n) => json!({ "hidden": true, "size": n }),
        }
    }
}

/// The fields as `name=value` pairs separated by spaces.
pub fn fields_text(fields: &[(&'static str, Field<'_>)]) -> String {
    let pairs: Vec<String> = fields
        .iter()
        .map(|(name, f)| format!("{name}={}", f.text()))
        .collect();
    pairs.join(" ")
}

/// The fields as a JSON object, in the method's order.
pub fn fields_json(fields: &[(&'static str, Field<'_>)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(name, f)| ((*name).to_owned(), f.json()))
            .collect::<Map<_, _>>(),
    )
}

fn s<'a>(name: &'static str, v: &'a ShortStr) -> (&'static str, Field<'a>) {
    (name, Field::Str(v.as_bytes()))
}

fn l<'a>(name: &'static str, v: &'a LongStr) -> (&'static str, Field<'a>) {
    (name, Field::Str(v.as_bytes()))
}

fn b(name: &'static str, v: bool) -> (&'static str, Field<'static>) {
    (name, Field::Bool(v))
}

fn n(name: &'static str, v: impl Into<u64>) -> (&'static str, Field<'static>) {
    (name, Field::Num(v.into()))
}

fn t<'a>(name: &'static str, v: &'a FieldTable) -> (&'static str, Field<'a>) {
    (name, Field::Table(v))
}

fn code(v: ReplyCode) -> (&'static str, Field<'static>) {
    ("reply_code", Field::Code(v))
}

/// A credential: its text with `show`, its length otherwise.
fn secret<'a>(name: &'static str, v: &'a LongStr, show: bool) -> (&'static str, Field<'a>) {
    if show {
        l(name, v)
    } else {
        (name, Field::Secret(v.len()))
    }
}

/// Every argument of `m`, in the spec's order (reserved arguments have no field). SASL
/// responses and secrets are hidden unless `show_secrets`: a PLAIN response holds the
/// password.
pub fn method_fields(m: &Method, show_secrets: bool) -> Vec<(&'static str, Field<'_>)> {
    use Method as M;
    match m {
        M::ConnectionStart(m) => vec![
            n("version_major", m.version_major),
            n("version_minor", m.version_minor),
            t("server_properties", &m.server_properties),
            l("mechanisms", &m.mechanisms),
            l("locales", &m.locales),
        ],
        M::ConnectionStartOk(m) => vec![
            t("client_properties", &m.client_properties),
            s("mechanism", &m.mechanism),
            secret("response", &m.response, show_secrets),
            s("locale", &m.locale),
        ],
        M::ConnectionSecure(m) => vec![secret("challenge", &m.challenge, show_secrets)],
        M::ConnectionSecureOk(m) => vec![secret("response", &m.response, show_secrets)],
        M::ConnectionTune(m) => tune(m.channel_max, m.frame_max, m.heartbeat),
        M::ConnectionTuneOk(m) => tune(m.channel_max, m.frame_max, m.heartbeat),
        M::ConnectionOpen(m) => vec![s("virtual_host", &m.virtual_host)],
        M::ConnectionClose(m) => close(m.reply_code, &m.reply_text, m.class_id, m.method_id),
        M::ConnectionBlocked(m) => vec![s("reason", &m.reason)],
        M::ConnectionUpdateSecret(m) => vec![
            secret("new_secret", &m.new_secret, show_secrets),
            s("reason", &m.reason),
        ],
        M::ChannelFlow(m) => vec![b("active", m.active)],
        M::ChannelFlowOk(m) => vec![b("active", m.active)],
        M::ChannelClose(m) => close(m.reply_code, &m.reply_text, m.class_id, m.method_id),
        M::AccessRequest(m) => vec![
            s("realm", &m.realm),
            b("exclusive", m.exclusive),
            b("passive", m.passive),
            b("active", m.active),
            b("write", m.write),
            b("read", m.read),
        ],
        other => exchange_fields(other)
            .or_else(|| queue_fields(other))
            .or_else(|| basic_fields(other))
            .unwrap_or_else(|| settle_fields(other)),
    }
}

fn tune(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<(&'static str, Field<'static>)> {
    vec![
        n("channel_max", channel_max),
        n("frame_max", frame_max),
        n("heartbeat", heartbeat),
    ]
}

fn close(
    reply_code: ReplyCode,
    text: &ShortStr,
    class_id: u16,
    method_id: u16,
) -> Vec<(&'static str, Field<'_>)> {
    vec![
        code(reply_code),
        s("reply_text", text),
        n("class_id", class_id),
        n("method_id", method_id),
    ]
}

/// The `exchange` class; `None` for another class.
fn exchange_fields(m: &Method) -> Option<Vec<(&'static str, Field<'_>)>> {
    use Method as M;
    Some(match m {
        M::ExchangeDeclare(m) => vec![
            s("exchange", &m.exchange),
            s("type", &m.kind),
            b("passive", m.passive),
            b("durable", m.durable),
            b("auto_delete", m.auto_delete),
            b("internal", m.internal),
            b("no_wait", m.no_wait),
            t("arguments", &m.arguments),
        ],
        M::ExchangeDelete(m) => vec![
            s("exchange", &m.exchange),
            b("if_unused", m.if_unused),
            b("no_wait", m.no_wait),
        ],
        M::ExchangeBind(m) => vec![
            s("destination", &m.destination),
            s("source", &m.source),
            s("routing_key", &m.routing_key),
            b("no_wait", m.no_wait),
            t("arguments", &m.arguments),
        ],
        M::ExchangeUnbind(m) => vec![
            s("destination", &m.destination),
            s("source", &m.source),
            s("routing_key", &m.routing_key),
            b("no_wait", m.no_wait),
            t("arguments", &m.arguments),
        ],
        _ => return None,
    })
}

/// The `queue` class; `None` for another class.
fn queue_fields(m: &Method) -> Option<Vec<(&'static str, Field<'_>)>> {
    use Method as M;
    Some(match m {
        M::QueueDeclare(m) => vec![
            s("queue", &m.queue),
            b("passive", m.passive),
            b("durable", m.durable),
            b("exclusive", m.exclusive),
            b("auto_delete", m.auto_delete),
            b("no_wait", m.no_wait),
            t("arguments", &m.arguments),
        ],
        M::QueueDeclareOk(m) => vec![
            s("queue", &m.queue),
            n("message_count", m.message_count),
            n("consumer_count", m.consumer_count),
        ],
        M::QueueBind(m) => vec![
            s("queue", &m.queue),
            s("exchange", &m.exchange),
            s("routing_key", &m.routing_key),
            b("no_wait", m.no_wait),
            t("arguments", &m.arguments),
        ],
        M::QueuePurge(m) => vec![s("queue", &m.queue), b("no_wait", m.no_wait)],
        M::QueuePurgeOk(m) => vec![n("message_count", m.message_count)],
        M::QueueDelete(m) => vec![
            s("queue", &m.queue),
            b("if_unused", m.if_unused),
            b("if_empty", m.if_empty),
            b("no_wait", m.no_wait),
        ],
        M::QueueDeleteOk(m) => vec![n("message_count", m.message_count)],
        M::QueueUnbind(m) => vec![
            s("queue", &m.queue),
            s("exchange", &m.exchange),
            s("routing_key", &m.routing_key),
            t("arguments", &m.arguments),
        ],
        _ => return None,
    })
}

/// The `basic` class's consume, publish and delivery methods; `None` for the others.
fn basic_fields(m: &Method) -> Option<Vec<(&'static str, Field<'_>)>> {
    use Method as M;
    Some(match m {
        M::BasicQos(m) => vec![
            n("prefetch_size", m.prefetch_size),
            n("prefetch_count", m.prefetch_count),
            b("global", m.global),
        ],
        M::BasicConsume(m) => vec![
            s("queue", &m.queue),
            s("consumer_tag", &m.consumer_tag),
            b("no_local", m.no_local),
            b("no_ack", m.no_ack),
            b("exclusive", m.exclusive),
            b("no_wait", m.no_wait),
            t("arguments", &m.arguments),
        ],
        M::BasicConsumeOk(m) => vec![s("consumer_tag", &m.consumer_tag)],
        M::BasicCancel(m) => vec![s("consumer_tag", &m.consumer_tag), b("no_wait", m.no_wait)],
        M::BasicCancelOk(m) => vec![s("consumer_tag", &m.consumer_tag)],
        M::BasicPublish(m) => vec![
            s("exchange", &m.exchange),
            s("routing_key", &m.routing_key),
            b("mandatory", m.mandatory),
            b("immediate", m.immediate),
        ],
        M::BasicReturn(m) => vec![
            code(m.reply_code),
            s("reply_text", &m.reply_text),
            s("exchange", &m.exchange),
            s("routing_key", &m.routing_key),
        ],
        M::BasicDeliver(m) => vec![
            s("consumer_tag", &m.consumer_tag),
            n("delivery_tag", m.delivery_tag.0),
            b("redelivered", m.redelivered),
            s("exchange", &m.exchange),
            s("routing_key", &m.routing_key),
        ],
        M::BasicGet(m) => vec![s("queue", &m.queue), b("no_ack", m.no_ack)],
        M::BasicGetOk(m) => vec![
            n("delivery_tag", m.delivery_tag.0),
            b("redelivered", m.redelivered),
            s("exchange", &m.exchange),
            s("routing_key", &m.routing_key),
            n("message_count", m.message_count),
        ],
        _ => return None,
    })
}

/// Acks, rejects, recovers and `confirm.select`; methods without arguments have no fields.
fn settle_fields(m: &Method) -> Vec<(&'static str, Field<'_>)> {
    use Method as M;
    match m {
        M::BasicAck(m) => vec![
            n("delivery_tag", m.delivery_tag.0),
            b("multiple", m.multiple),
        ],
        M::BasicReject(m) => vec![n("delivery_tag", m.delivery_tag.0), b("requeue", m.requeue)],
        M::BasicRecoverAsync(m) => vec![b("requeue", m.requeue)],
        M::BasicRecover(m) => vec![b("requeue", m.requeue)],
        M::BasicNack(m) => vec![
            n("delivery_tag", m.delivery_tag.0),
            b("multiple", m.multiple),
            b("requeue", m.requeue),
        ],
        M::ConfirmSelect(m) => vec![b("no_wait", m.no_wait)],
        // The rest have no arguments: the *-ok replies, channel.open, tx.*.
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use amqp_client::FieldValue;
    use amqp_wire::methods::{BasicDeliver, ConnectionStartOk, QueueDeclare};

    use super::*;

    #[test]
    fn a_method_lists_every_argument() {
        let mut arguments = FieldTable::new();
        arguments.insert("x-message-ttl", FieldValue::I32(1000));
        let m = Method::QueueDeclare(QueueDeclare {
            queue: ShortStr::from_static("jobs"),
            durable: true,
            arguments,
            ..Default::default()
        });
        let fields = method_fields(&m, false);
        assert_eq!(
            fields_text(&fields),
            r#"queue="jobs" passive=false durable=true exclusive=false auto_delete=false no_wait=false arguments={x-message-ttl:i32=1000}"#
        );
        let json = fields_json(&fields);
        assert_eq!(json["arguments"]["x-message-ttl"]["type"], "i32");
        let deliver = Method::BasicDeliver(BasicDeliver {
            delivery_tag: amqp_client::DeliveryTag(9),
            ..Default::default()
        });
        assert_eq!(
            fields_json(&method_fields(&deliver, false))["delivery_tag"],
            9
        );
    }

    #[test]
    fn credentials_are_hidden_unless_asked_for() {
        let m = Method::ConnectionStartOk(ConnectionStartOk {
            response: LongStr::from("\0guest\0guest"),
            ..Default::default()
        });
        let hidden = fields_text(&method_fields(&m, false));
        assert!(hidden.contains("response=<12 octets, hidden>"), "{hidden}");
        assert!(!hidden.contains("guest"));
        let shown = fields_text(&method_fields(&m, true));
        assert!(shown.contains(r#"response="\0guest\0guest""#), "{shown}");
    }
}
