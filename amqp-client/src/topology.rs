//! What was declared through a connection, recorded so a recovery can declare it again.
//!
//! Recorded when the broker confirms it (the `-ok`), forgotten when it is deleted or unbound.
//! Passive declares are checks, not declarations, and are not recorded. A queue the broker
//! named (declared with an empty name) gets a new name on the new connection; bindings and
//! consumers that named it follow the new name.

use amqp_wire::methods::{BasicConsume, ExchangeBind, ExchangeDeclare, QueueBind, QueueDeclare};
use amqp_wire::{FieldValue, Method, ShortStr};

/// A queue declaration and the name it has now.
#[derive(Clone, Debug)]
pub(crate) struct RecordedQueue {
    /// The name the broker knows it by on the current connection.
    pub(crate) name: ShortStr,
    /// The declaration as sent (an empty name when the broker chose it).
    pub(crate) declare: QueueDeclare,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Topology {
    exchanges: Vec<ExchangeDeclare>,
    queues: Vec<RecordedQueue>,
    queue_bindings: Vec<QueueBind>,
    exchange_bindings: Vec<ExchangeBind>,
}

impl Topology {
    /// Records what a confirmed request changed. `reply` is the broker's `-ok`.
    pub(crate) fn record(&mut self, request: &Method, reply: &Method) {
        match (request, reply) {
            (Method::ExchangeDeclare(m), _) if !m.passive => {
                self.exchanges.retain(|e| e.exchange != m.exchange);
                self.exchanges.push(m.clone());
            }
            (Method::ExchangeDelete(m), _) => {
                self.exchanges.retain(|e| e.exchange != m.exchange);
                self.queue_bindings.retain(|b| b.exchange != m.exchange);
                self.exchange_bindings
                    .retain(|b| b.source != m.exchange && b.destination != m.exchange);
            }
            (Method::QueueDeclare(m), Method::QueueDeclareOk(ok)) if !m.passive => {
                self.queues.retain(|q| q.name != ok.queue);
                self.queues.push(RecordedQueue {
                    name: ok.queue.clone(),
                    declare: m.clone(),
                });
            }
            (Method::QueueDelete(m), _) => {
                self.queues.retain(|q| q.name != m.queue);
                self.queue_bindings.retain(|b| b.queue != m.queue);
            }
            (Method::QueueBind(m), _)
                if !self.queue_bindings.iter().any(|b| same_queue_binding(b, m)) =>
            {
                self.queue_bindings.push(m.clone());
            }
            (Method::QueueUnbind(m), _) => self.queue_bindings.retain(|b| {
                !(b.queue == m.queue
                    && b.exchange == m.exchange
                    && b.routing_key == m.routing_key
                    && b.arguments == m.arguments)
            }),
            (Method::ExchangeBind(m), _)
                if !self
                    .exchange_bindings
                    .iter()
                    .any(|b| same_exchange_binding(b, m)) =>
            {
                self.exchange_bindings.push(m.clone());
            }
            (Method::ExchangeUnbind(m), _) => self.exchange_bindings.retain(|b| {
                !(b.destination == m.destination
                    && b.source == m.source
                    && b.routing_key == m.routing_key
                    && b.arguments == m.arguments)
            }),
            _ => {}
        }
    }

    /// Whether a consumer consumes a stream: it gave a stream argument (`x-stream-offset`,
    /// `x-stream-filter`, ...), or its queue was declared through this connection as one.
    pub(crate) fn consumes_stream(&self, spec: &BasicConsume) -> bool {
        let stream_argument = spec
            .arguments
            .iter()
            .any(|(key, _)| key.as_bytes().starts_with(b"x-stream-"));
        stream_argument
            || self.queues.iter().any(|q| {
                q.name == spec.queue
                    && q.declare.arguments.get("x-queue-type") == Some(&FieldValue::from("stream"))
            })
    }

    /// Whether a request changes the topology (so its method is kept until its reply).
    pub(crate) fn is_recorded(method: &Method) -> bool {
        matches!(
            method,
            Method::ExchangeDeclare(_)
                | Method::ExchangeDelete(_)
                | Method::QueueDeclare(_)
                | Method::QueueDelete(_)
                | Method::QueueBind(_)
                | Method::QueueUnbind(_)
                | Method::ExchangeBind(_)
                | Method::ExchangeUnbind(_)
        )
    }

    /// The first step of a replay: every exchange and queue, in declaration order.
    pub(crate) fn declarations(&self) -> Vec<Method> {
        let exchanges = self.exchanges.iter().cloned().map(Method::from);
        let queues = self.queues.iter().map(|q| Method::from(q.declare.clone()));
        exchanges.chain(queues).collect()
    }

    /// The queue recorded at `index` of the queue part of [`Topology::declarations`] was
    /// declared again and is now called `new_name`. Returns the old name if it changed.
    pub(crate) fn renamed(&mut self, index: usize, new_name: ShortStr) -> Option<ShortStr> {
        let queue = self.queues.get_mut(index)?;
        if queue.name == new_name {
            return None;
        }
        let old = std::mem::replace(&mut queue.name, new_name.clone());
        for b in &mut self.queue_bindings {
            if b.queue == old {
                b.queue = new_name.clone();
            }
        }
        Some(old)
    }

    /// How many exchanges come before the queues in [`Topology::declarations`].
    pub(crate) fn exchange_count(&self) -> usize {
        self.exchanges.len()
    }

    /// The second step: every binding, with the queues' current names.
    pub(crate) fn bindings(&self) -> Vec<Method> {
        let exchange = self.exchange_bindings.iter().cloned().map(Method::from);
        let queue = self.queue_bindings.iter().cloned().map(Method::from);
        exchange.chain(queue).collect()
    }
}

fn same_queue_binding(a: &QueueBind, b: &QueueBind) -> bool {
    a.queue == b.queue
        && a.exchange == b.exchange
        && a.routing_key == b.routing_key
        && a.arguments == b.arguments
}

fn same_exchange_binding(a: &ExchangeBind, b: &ExchangeBind) -> bool {
    a.destination == b.destination
        && a.source == b.source
        && a.routing_key == b.routing_key
        && a.arguments == b.arguments
}

/// A consumer's `basic.consume`, with the tag the broker confirmed, for re-registering it.
pub(crate) fn consume_again(spec: &BasicConsume, tag: &ShortStr, queue: &ShortStr) -> BasicConsume {
    BasicConsume {
        consumer_tag: tag.clone(),
        queue: queue.clone(),
        no_wait: false,
        ..spec.clone()
    }
}

/// The `x-stream-offset` header RabbitMQ puts on each delivery from a stream, if any.
pub(crate) fn stream_offset(properties: &amqp_wire::BasicProperties) -> Option<i64> {
    match properties.headers.as_ref()?.get(STREAM_OFFSET)? {
        FieldValue::I64(o) => Some(*o),
        FieldValue::I32(o) => Some(i64::from(*o)),
        FieldValue::U32(o) => Some(i64::from(*o)),
        _ => None,
    }
}

/// A stream consumer (one that consumed with an `x-stream-offset` argument) was handed the
/// delivery at `offset`: a re-registration after a recovery must start after it, at
/// `offset + 1`, not at the original offset again (which would deliver the stream from
/// there once more). Consumers without the argument are left alone.
pub(crate) fn advance_stream_offset(spec: &mut BasicConsume, offset: i64) {
    if spec.arguments.get(STREAM_OFFSET).is_some() {
        spec.arguments
            .insert(STREAM_OFFSET, offset.saturating_add(1));
    }
}

const STREAM_OFFSET: &str = "x-stream-offset";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_consumer_resumes_after_its_last_delivery() {
        let mut spec = BasicConsume {
            queue: s("stream"),
            arguments: [("x-stream-offset", FieldValue::from("first"))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let delivery = |offset: i64| amqp_wire::BasicProperties {
            headers: Some([("x-stream-offset", offset)].into_iter().collect()),
            ..Default::default()
        };
        assert_eq!(stream_offset(&amqp_wire::BasicProperties::default()), None);
        for offset in [0, 1, 41] {
            let offset = stream_offset(&delivery(offset)).expect("offset header");
            advance_stream_offset(&mut spec, offset);
        }
        let again = consume_again(&spec, &s("ctag"), &s("stream"));
        assert_eq!(
            again.arguments.get("x-stream-offset"),
            Some(&FieldValue::I64(42))
        );
        assert_eq!(again.arguments.len(), 1);

        // A consumer of a classic or quorum queue is not changed by a stray header.
        let mut plain = BasicConsume {
            queue: s("q"),
            ..Default::default()
        };
        advance_stream_offset(&mut plain, 7);
        assert!(plain.arguments.get("x-stream-offset").is_none());
    }
    use amqp_wire::methods::{ExchangeDelete, QueueDeclareOk, QueueDelete, QueueUnbind};

    proptest::proptest! {
        /// Give-back acks only a stream consumer's deliveries: one that gave a stream argument,
        /// or consumes a queue declared as a stream through this connection. Nothing else,
        /// near-miss argument names and other queue types included, makes it ack.
        #[test]
        fn give_back_never_acks_outside_stream_consumers(
            keys in proptest::collection::vec(proptest::sample::select(ARGUMENT_KEYS.to_vec()), 0..4),
            declared in proptest::collection::vec(
                (proptest::sample::select(QUEUES.to_vec()), proptest::sample::select(QUEUE_TYPES.to_vec())),
                0..4,
            ),
            queue in proptest::sample::select(QUEUES.to_vec()),
        ) {
            let mut topology = Topology::default();
            for (name, kind) in &declared {
                let declare = QueueDeclare {
                    queue: s(name),
                    arguments: [("x-queue-type", *kind)].into_iter().collect(),
                    ..Default::default()
                };
                let ok = QueueDeclareOk {
                    queue: s(name),
                    ..Default::default()
                };
                topology.record(&declare.into(), &ok.into());
            }
            let spec = BasicConsume {
                queue: s(queue),
                arguments: keys.iter().map(|k| (*k, 1i64)).collect(),
                ..Default::default()
            };
            // The last declaration of a name is the one recorded.
            let declared_stream = declared
                .iter()
                .rev()
                .find(|(name, _)| *name == queue)
                .is_some_and(|(_, kind)| *kind == "stream");
            let stream_argument = keys.iter().any(|k| k.starts_with("x-stream-"));
            let how = crate::command::Settle::give_back(topology.consumes_stream(&spec));
            let acks = matches!(how, crate::command::Settle::Ack { .. });
            proptest::prop_assert_eq!(acks, declared_stream || stream_argument);
        }
    }

    const ARGUMENT_KEYS: [&str; 7] = [
        "x-stream-offset",
        "x-stream-filter",
        "x-priority",
        "x-stream",
        "X-STREAM-OFFSET",
        "x-streams-offset",
        "stream-offset",
    ];
    const QUEUES: [&str; 3] = ["q1", "q2", "q3"];
    const QUEUE_TYPES: [&str; 3] = ["classic", "quorum", "stream"];

    fn s(v: &'static str) -> ShortStr {
        ShortStr::from_static(v)
    }

    fn declare_ok(name: &'static str) -> Method {
        QueueDeclareOk {
            queue: s(name),
            message_count: 0,
            consumer_count: 0,
        }
        .into()
    }

    #[test]
    fn records_and_forgets() {
        let mut t = Topology::default();
        let ex = ExchangeDeclare {
            exchange: s("ex"),
            ..Default::default()
        };
        t.record(
            &ex.clone().into(),
            &amqp_wire::methods::ExchangeDeclareOk.into(),
        );
        let server_named = QueueDeclare {
            exclusive: true,
            ..Default::default()
        };
        t.record(&server_named.into(), &declare_ok("amq.gen-1"));
        let passive = QueueDeclare {
            queue: s("other"),
            passive: true,
            ..Default::default()
        };
        t.record(&passive.into(), &declare_ok("other"));
        let bind = QueueBind {
            queue: s("amq.gen-1"),
            exchange: s("ex"),
            routing_key: s("k"),
            ..Default::default()
        };
        t.record(
            &bind.clone().into(),
            &amqp_wire::methods::QueueBindOk.into(),
        );
        t.record(
            &bind.clone().into(),
            &amqp_wire::methods::QueueBindOk.into(),
        );
        assert_eq!(
            t.declarations().len(),
            2,
            "passive declares are not recorded"
        );
        assert_eq!(t.bindings().len(), 1, "a binding is recorded once");

        // The server-named queue comes back under a new name; its binding follows.
        assert_eq!(t.renamed(0, s("amq.gen-2")), Some(s("amq.gen-1")));
        let Method::QueueBind(b) = &t.bindings()[0] else {
            panic!()
        };
        assert_eq!(b.queue, "amq.gen-2");

        let unbind = QueueUnbind {
            queue: s("amq.gen-2"),
            exchange: s("ex"),
            routing_key: s("k"),
            ..Default::default()
        };
        t.record(&unbind.into(), &amqp_wire::methods::QueueUnbindOk.into());
        assert!(t.bindings().is_empty());
        t.record(
            &QueueDelete {
                queue: s("amq.gen-2"),
                ..Default::default()
            }
            .into(),
            &amqp_wire::methods::QueueDeleteOk::default().into(),
        );
        t.record(
            &ExchangeDelete {
                exchange: s("ex"),
                ..Default::default()
            }
            .into(),
            &amqp_wire::methods::ExchangeDeleteOk.into(),
        );
        assert!(t.declarations().is_empty());
    }
}
