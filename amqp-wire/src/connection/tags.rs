//! Delivery-tag bookkeeping: publishes awaiting a confirm, deliveries awaiting an ack.
//!
//! Both are ascending queues of tags (tags only grow on a channel), so a `multiple` settle is
//! a drain from the front and a single one a binary search; memory follows the number of
//! unsettled tags, which the caller bounds (confirm window, prefetch).

use std::collections::VecDeque;

use bytes::Bytes;

use super::event::{Confirmation, Returned};
use crate::frame::content::BasicProperties;
use crate::types::{DeliveryTag, ShortStr};

/// What a `basic.return` carries back of a mandatory publish: its route and its content.
#[derive(Debug)]
pub(crate) struct Returnable {
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    pub(crate) properties: BasicProperties,
    /// The caller's `Bytes`, refcounted, not copied.
    pub(crate) body: Bytes,
}

impl Returnable {
    fn route_of(&self, message: &Returned) -> bool {
        self.exchange == message.exchange && self.routing_key == message.routing_key
    }

    fn content_of(&self, message: &Returned) -> bool {
        self.body == message.body && self.properties == message.properties
    }
}

/// A publish waiting for its confirm.
#[derive(Debug)]
struct Unconfirmed {
    tag: u64,
    /// A mandatory publish's route and content, to match a `basic.return` to it.
    returnable: Option<Box<Returnable>>,
    /// The return that came for it; its ack then resolves as [`Confirmation::Returned`].
    returned: Option<Box<Returned>>,
}

/// Publisher-confirm state of a channel in confirm mode.
#[derive(Debug)]
pub(crate) struct Confirms {
    next: u64,
    pending: VecDeque<Unconfirmed>,
}

impl Default for Confirms {
    fn default() -> Self {
        Self {
            next: 1,
            pending: VecDeque::new(),
        }
    }
}

impl Confirms {
    /// Numbers a publish; a mandatory one keeps what a return would carry back.
    pub(crate) fn publish(&mut self, returnable: Option<Returnable>) -> DeliveryTag {
        let tag = self.next;
        self.next += 1;
        self.pending.push_back(Unconfirmed {
            tag,
            returnable: returnable.map(Box::new),
            returned: None,
        });
        DeliveryTag(tag)
    }

    /// Publishes waiting for a confirm.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// A `basic.return` arrived; it carries no tag. RabbitMQ sends it while it handles the
    /// publish, before that publish's confirm, but may handle several publishes before it
    /// sends their confirms (and an earlier publish's confirm may come after a later one's
    /// return): neither the next confirm frame nor the route alone says which publish it is.
    /// Through a headers exchange, or bindings that change, one route can be routable for one
    /// message and not for the next. So the return goes to the oldest unreturned mandatory
    /// publish with its route and its content (properties and body), or, when none has its
    /// content, the oldest with its route. Gives the message back when no publish matches.
    pub(crate) fn returned(&mut self, message: Returned) -> Option<Returned> {
        let candidate = |p: &Unconfirmed| {
            p.returned.is_none() && p.returnable.as_ref().is_some_and(|r| r.route_of(&message))
        };
        let same_content = |p: &Unconfirmed| {
            candidate(p)
                && p.returnable
                    .as_ref()
                    .is_some_and(|r| r.content_of(&message))
        };
        let at = (self.pending.iter().position(same_content))
            .or_else(|| self.pending.iter().position(candidate));
        let Some(p) = at.and_then(|at| self.pending.get_mut(at)) else {
            return Some(message);
        };
        p.returnable = None;
        p.returned = Some(Box::new(message));
        None
    }

    /// Settles `tag` (and with `multiple` every tag up to it; tag 0 with `multiple` is all),
    /// calling `emit` for each. Returns false when `tag` was not waiting: the peer broke
    /// the protocol.
    pub(crate) fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        ack: bool,
        mut emit: impl FnMut(DeliveryTag, Confirmation),
    ) -> bool {
        let outcome = |p: Unconfirmed| match (ack, p.returned) {
            (true, Some(r)) => Confirmation::Returned(r),
            (true, None) => Confirmation::Ack,
            (false, _) => Confirmation::Nack,
        };
        if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            if tag >= self.next {
                return false;
            }
            while self.pending.front().is_some_and(|p| p.tag <= upto) {
                if let Some(p) = self.pending.pop_front() {
                    emit(DeliveryTag(p.tag), outcome(p));
                }
            }
            return true;
        }
        match self.pending.binary_search_by_key(&tag, |p| p.tag) {
            Ok(at) => {
                if let Some(p) = self.pending.remove(at) {
                    emit(DeliveryTag(p.tag), outcome(p));
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Deliveries of a channel that await an ack, nack or reject.
#[derive(Debug, Default)]
pub(crate) struct Unacked {
    tags: VecDeque<u64>,
}

impl Unacked {
    /// A delivery that needs acknowledging arrived.
    pub(crate) fn push(&mut self, tag: DeliveryTag) {
        self.tags.push_back(tag.0);
    }

    /// Settles `tag` (with `multiple`, every tag up to it; 0 with `multiple` is all).
    /// Returns false, changing nothing, when no such delivery awaits: the broker would close
    /// the channel with 406 for it.
    pub(crate) fn settle(&mut self, tag: u64, multiple: bool) -> bool {
        if multiple {
            if tag == 0 {
                let any = !self.tags.is_empty();
                self.tags.clear();
                return any;
            }
            let n = self.tags.partition_point(|&t| t <= tag);
            if n == 0 {
                return false;
            }
            self.tags.drain(..n);
            return true;
        }
        match self.tags.binary_search(&tag) {
            Ok(at) => {
                self.tags.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Deliveries awaiting a settle.
    pub(crate) fn len(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(c: &mut Confirms, tag: u64, multiple: bool, ack: bool) -> Vec<(u64, Confirmation)> {
        let mut out = Vec::new();
        assert!(c.settle(tag, multiple, ack, |t, o| out.push((t.0, o))));
        out
    }

    fn route() -> (ShortStr, ShortStr) {
        (ShortStr::from_static("hx"), ShortStr::from_static("k"))
    }

    /// A mandatory publish to [`route`] with this body, as kept and as returned.
    fn returnable(body: &'static [u8]) -> Returnable {
        let (exchange, routing_key) = route();
        Returnable {
            exchange,
            routing_key,
            properties: BasicProperties::default(),
            body: Bytes::from_static(body),
        }
    }

    fn returned(body: &[u8]) -> Returned {
        let (exchange, routing_key) = route();
        Returned {
            reply_code: crate::ReplyCode::NO_ROUTE,
            reply_text: ShortStr::from_static("NO_ROUTE"),
            exchange,
            routing_key,
            properties: Default::default(),
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn multiple_ack_settles_exactly_the_tags_up_to_it() {
        let mut c = Confirms::default();
        for _ in 0..5 {
            c.publish(None);
        }
        assert_eq!(settled(&mut c, 2, false, true), [(2, Confirmation::Ack)]);
        assert_eq!(
            settled(&mut c, 4, true, false),
            [
                (1, Confirmation::Nack),
                (3, Confirmation::Nack),
                (4, Confirmation::Nack)
            ]
        );
        assert_eq!(c.len(), 1);
        assert!(!c.settle(4, false, true, |_, _| panic!("settled twice")));
        assert!(!c.settle(9, true, true, |_, _| panic!("not published")));
        assert_eq!(settled(&mut c, 0, true, true), [(5, Confirmation::Ack)]);
    }

    #[test]
    fn a_return_is_attached_to_the_mandatory_publish_with_its_route() {
        let mut c = Confirms::default();
        c.publish(None);
        c.publish(Some(returnable(b"x")));
        assert!(c.returned(returned(b"x")).is_none());
        let out = settled(&mut c, 2, true, true);
        assert_eq!(out[0], (1, Confirmation::Ack));
        assert_eq!(
            out[1],
            (2, Confirmation::Returned(Box::new(returned(b"x"))))
        );
        // No mandatory publish waits: the return is handed back.
        assert_eq!(c.returned(returned(b"x")), Some(returned(b"x")));
    }

    #[test]
    fn a_later_return_before_an_earlier_ack_resolves_the_later_publish() {
        // Publish A (routed to a slow queue) then B (unroutable), same exchange and key:
        // RabbitMQ sends B's return and ack before A's ack.
        let mut c = Confirms::default();
        c.publish(Some(returnable(b"A, large")));
        c.publish(Some(returnable(b"B")));
        assert!(c.returned(returned(b"B")).is_none());
        assert_eq!(
            settled(&mut c, 2, false, true),
            [(2, Confirmation::Returned(Box::new(returned(b"B"))))]
        );
        assert_eq!(settled(&mut c, 1, false, true), [(1, Confirmation::Ack)]);
    }

    proptest::proptest! {
        /// Every publish resolves with what happened to it, whatever order RabbitMQ's
        /// confirm batching produces: returns, single and `multiple` acks and nacks.
        #[test]
        fn returns_resolve_the_publish_they_belong_to(
            fates in proptest::collection::vec(0u8..3, 1..40),
            schedule in proptest::collection::vec(0u8..6, 0..160),
        ) {
            let mut c = Confirms::default();
            for tag in 1..=fates.len() {
                c.publish(Some(model::returnable(tag as u64)));
            }
            let mut got = std::collections::BTreeMap::new();
            for frame in model::Broker::new(&fates).run(&schedule) {
                match frame {
                    model::Frame::Return(tag) => {
                        proptest::prop_assert!(c.returned(model::returned(tag)).is_none());
                    }
                    model::Frame::Confirm { tag, multiple, ack } => {
                        let known = c.settle(tag, multiple, ack, |t, o| {
                            got.insert(t.0, o);
                        });
                        proptest::prop_assert!(known);
                    }
                }
            }
            for (i, fate) in fates.iter().enumerate() {
                let tag = i as u64 + 1;
                let want = match fate {
                    0 => Confirmation::Ack,
                    1 => Confirmation::Returned(Box::new(model::returned(tag))),
                    _ => Confirmation::Nack,
                };
                proptest::prop_assert_eq!(got.get(&tag), Some(&want), "tag {}", tag);
            }
        }
    }

    /// A model of how RabbitMQ's channel confirms publishes (`rabbit_channel`'s
    /// `coalesce_and_send`): it handles publishes in order, returns an unroutable mandatory
    /// one at once and counts it confirmed; queues confirm routed ones later, in any order;
    /// now and then (not after every publish) it flushes: one `multiple` frame for the
    /// confirmed tags below the oldest unconfirmed one, then a single frame for each other.
    mod model {
        use super::*;

        pub(super) enum Frame {
            Return(u64),
            Confirm { tag: u64, multiple: bool, ack: bool },
        }

        fn body(tag: u64) -> Vec<u8> {
            format!("message {tag}").into_bytes()
        }

        pub(super) fn returnable(tag: u64) -> Returnable {
            let (exchange, routing_key) = route();
            Returnable {
                exchange,
                routing_key,
                properties: BasicProperties::default(),
                body: Bytes::from(body(tag)),
            }
        }

        pub(super) fn returned(tag: u64) -> Returned {
            super::returned(&body(tag))
        }

        pub(super) struct Broker<'a> {
            /// Per publish: 0 routed and acked, 1 unroutable (returned), 2 routed and nacked.
            fates: &'a [u8],
            handled: usize,
            /// Routed publishes whose queue has not confirmed yet.
            in_queue: Vec<u64>,
            unconfirmed: std::collections::BTreeSet<u64>,
            acks: Vec<u64>,
            nacks: Vec<u64>,
            frames: Vec<Frame>,
        }

        impl<'a> Broker<'a> {
            pub(super) fn new(fates: &'a [u8]) -> Self {
                Self {
                    fates,
                    handled: 0,
                    in_queue: Vec::new(),
                    unconfirmed: Default::default(),
                    acks: Vec::new(),
                    nacks: Vec::new(),
                    frames: Vec::new(),
                }
            }

            /// Runs `schedule` (each step: handle the next publish, let a queue confirm, or
            /// flush), then lets every queue confirm and flushes.
            pub(super) fn run(mut self, schedule: &[u8]) -> Vec<Frame> {
                for &step in schedule {
                    match step {
                        0 | 1 if self.handled < self.fates.len() => self.handle_publish(),
                        2 | 3 if !self.in_queue.is_empty() => self.queue_confirms(step),
                        _ => self.flush(),
                    }
                }
                while self.handled < self.fates.len() {
                    self.handle_publish();
                }
                while !self.in_queue.is_empty() {
                    self.queue_confirms(0);
                }
                self.flush();
                self.frames
            }

            fn handle_publish(&mut self) {
                self.handled += 1;
                let tag = self.handled as u64;
                self.unconfirmed.insert(tag);
                if self.fates[tag as usize - 1] == 1 {
                    self.frames.push(Frame::Return(tag));
                    self.acks.push(tag);
                } else {
                    self.in_queue.push(tag);
                }
            }

            fn queue_confirms(&mut self, pick: u8) {
                let tag = self
                    .in_queue
                    .swap_remove(usize::from(pick) % self.in_queue.len());
                match self.fates[tag as usize - 1] {
                    0 => self.acks.push(tag),
                    _ => self.nacks.push(tag),
                }
            }

            fn flush(&mut self) {
                let acks = std::mem::take(&mut self.acks);
                let nacks = std::mem::take(&mut self.nacks);
                for tag in acks.iter().chain(&nacks) {
                    self.unconfirmed.remove(tag);
                }
                self.coalesce(&acks, &nacks, true);
                self.coalesce(&nacks, &acks, false);
            }

            /// `tags` as frames; none may cover a tag of the other kind (`other`) or one
            /// still unconfirmed.
            fn coalesce(&mut self, tags: &[u64], other: &[u64], ack: bool) {
                let mut tags = tags.to_vec();
                tags.sort_unstable();
                let Some(&last) = tags.last() else { return };
                let unconfirmed = self.unconfirmed.first().copied().unwrap_or(last + 1);
                let cutoff = other.iter().copied().fold(unconfirmed, u64::min);
                let below: Vec<u64> = tags.iter().copied().filter(|t| *t < cutoff).collect();
                if let Some(&top) = below.last() {
                    self.frames.push(Frame::Confirm {
                        tag: top,
                        multiple: true,
                        ack,
                    });
                }
                for tag in tags.into_iter().filter(|t| *t >= cutoff) {
                    self.frames.push(Frame::Confirm {
                        tag,
                        multiple: false,
                        ack,
                    });
                }
            }
        }
    }

    #[test]
    fn unacked_refuses_unknown_and_double_acks() {
        let mut u = Unacked::default();
        for t in 1..=5 {
            u.push(DeliveryTag(t));
        }
        assert!(u.settle(3, false));
        assert!(!u.settle(3, false));
        assert!(u.settle(2, true));
        assert_eq!(u.len(), 2);
        assert!(!u.settle(2, true));
        assert!(u.settle(0, true));
        assert!(!u.settle(0, true));
    }
}
