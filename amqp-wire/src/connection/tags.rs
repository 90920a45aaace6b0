//! Delivery-tag bookkeeping: publishes awaiting a confirm, deliveries awaiting an ack.
//!
//! Both are ascending queues of tags (tags only grow on a channel), so a `multiple` settle is
//! a drain from the front and a single one a binary search; memory follows the number of
//! unsettled tags, which the caller bounds (confirm window, prefetch).

use std::collections::VecDeque;

use super::event::{Confirmation, Returned};
use crate::types::{DeliveryTag, ShortStr};

/// A publish waiting for its confirm.
#[derive(Debug)]
struct Unconfirmed {
    tag: u64,
    /// Exchange and routing key of a mandatory publish, to match a `basic.return` to it.
    route: Option<(ShortStr, ShortStr)>,
    /// The return that came for it; its ack then resolves as [`Confirmation::Returned`].
    returned: Option<Box<Returned>>,
}

/// Publisher-confirm state of a channel in confirm mode.
#[derive(Debug)]
pub(crate) struct Confirms {
    next: u64,
    pending: VecDeque<Unconfirmed>,
    /// Returns that arrived since the last confirm frame, oldest first.
    returns: Vec<Returned>,
}

impl Default for Confirms {
    fn default() -> Self {
        Self {
            next: 1,
            pending: VecDeque::new(),
            returns: Vec::new(),
        }
    }
}

impl Confirms {
    /// Numbers a publish; `mandatory` publishes keep their route for [`Confirms::returned`].
    pub(crate) fn publish(&mut self, route: Option<(ShortStr, ShortStr)>) -> DeliveryTag {
        let tag = self.next;
        self.next += 1;
        self.pending.push_back(Unconfirmed {
            tag,
            route,
            returned: None,
        });
        DeliveryTag(tag)
    }

    /// Publishes waiting for a confirm.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// A `basic.return` arrived. It carries no tag; RabbitMQ sends it while it handles the
    /// publish, and that publish's confirm goes out in the very next confirm frame, whose
    /// tag is the publish's own (a single ack) or covers it as the newest (a `multiple` ack):
    /// when RabbitMQ handles a publish, it is the newest on the channel. So the return waits
    /// for that frame ([`Confirms::settle`]), which attaches it to the newest publish it
    /// covers with the return's route. The route alone cannot say which: through a headers
    /// exchange, or bindings that change, one route can be routable for one message and not
    /// for the next, and an earlier publish's ack may come after the later one's return.
    /// Gives the message back when no mandatory publish with its route waits.
    pub(crate) fn returned(&mut self, message: Returned) -> Option<Returned> {
        // More returns than waiting publishes cannot all be theirs (a broken peer): bounded.
        let waits = self.returns.len() < self.pending.len()
            && self.pending.iter().any(|p| p.matches(&message));
        if !waits {
            return Some(message);
        }
        self.returns.push(message);
        None
    }

    /// Settles `tag` (and with `multiple` every tag up to it; tag 0 with `multiple` is all),
    /// calling `emit` for each, and hands back the returns no settled publish matched.
    /// `None` when `tag` was not waiting: the peer broke the protocol.
    pub(crate) fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        ack: bool,
        mut emit: impl FnMut(DeliveryTag, Confirmation),
    ) -> Option<Vec<Returned>> {
        let settled = self.take(tag, multiple)?;
        let mut settled: Vec<Unconfirmed> = settled.into();
        let mut unmatched = Vec::new();
        // The newest return belongs to the newest publish the frame covers, and so on back.
        for message in std::mem::take(&mut self.returns).into_iter().rev() {
            match settled
                .iter_mut()
                .rev()
                .find(|p| p.returned.is_none() && p.matches(&message))
            {
                Some(p) => p.returned = Some(Box::new(message)),
                None => unmatched.push(message),
            }
        }
        unmatched.reverse();
        for p in settled {
            let outcome = match (ack, p.returned) {
                (true, Some(r)) => Confirmation::Returned(r),
                (true, None) => Confirmation::Ack,
                (false, _) => Confirmation::Nack,
            };
            emit(DeliveryTag(p.tag), outcome);
        }
        Some(unmatched)
    }

    /// Removes the publishes a confirm frame covers, oldest first; `None` when it names a
    /// tag that is not waiting.
    fn take(&mut self, tag: u64, multiple: bool) -> Option<VecDeque<Unconfirmed>> {
        if multiple {
            if tag >= self.next {
                return None;
            }
            let upto = if tag == 0 { u64::MAX } else { tag };
            let n = self.pending.partition_point(|p| p.tag <= upto);
            let rest = self.pending.split_off(n);
            return Some(std::mem::replace(&mut self.pending, rest));
        }
        let at = self.pending.binary_search_by_key(&tag, |p| p.tag).ok()?;
        self.pending.remove(at).map(|p| VecDeque::from([p]))
    }
}

impl Unconfirmed {
    /// A mandatory publish to the exchange and routing key the message was returned from.
    fn matches(&self, message: &Returned) -> bool {
        self.route
            .as_ref()
            .is_some_and(|(ex, rk)| *ex == message.exchange && *rk == message.routing_key)
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
        let unmatched = c.settle(tag, multiple, ack, |t, o| out.push((t.0, o)));
        assert_eq!(unmatched, Some(Vec::new()));
        out
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
        assert!(
            c.settle(4, false, true, |_, _| panic!("settled twice"))
                .is_none()
        );
        assert!(
            c.settle(9, true, true, |_, _| panic!("not published"))
                .is_none()
        );
        assert_eq!(settled(&mut c, 0, true, true), [(5, Confirmation::Ack)]);
    }

    #[test]
    fn a_return_is_attached_to_the_mandatory_publish_with_its_route() {
        let route = (
            ShortStr::from_static("amq.direct"),
            ShortStr::from_static("q"),
        );
        let mut c = Confirms::default();
        c.publish(None);
        c.publish(Some(route.clone()));
        let message = Returned {
            reply_code: crate::ReplyCode::NO_ROUTE,
            reply_text: ShortStr::from_static("NO_ROUTE"),
            exchange: route.0.clone(),
            routing_key: route.1.clone(),
            properties: Default::default(),
            body: bytes::Bytes::from_static(b"x"),
        };
        assert!(c.returned(message.clone()).is_none());
        let out = settled(&mut c, 2, true, true);
        assert_eq!(out[0], (1, Confirmation::Ack));
        assert_eq!(
            out[1],
            (2, Confirmation::Returned(Box::new(message.clone())))
        );
        // No mandatory publish waits: the return is handed back.
        assert_eq!(c.returned(message.clone()), Some(message));
    }

    #[test]
    fn a_later_return_before_an_earlier_ack_resolves_the_later_publish() {
        // Publish A (routed to a slow queue) then B (unroutable), same exchange and key:
        // RabbitMQ sends B's return and ack before A's ack.
        let route = (ShortStr::from_static("hx"), ShortStr::from_static("k"));
        let mut c = Confirms::default();
        c.publish(Some(route.clone()));
        c.publish(Some(route.clone()));
        assert!(c.returned(model::returned(&route)).is_none());
        assert_eq!(
            settled(&mut c, 2, false, true),
            [(2, Confirmation::Returned(Box::new(model::returned(&route))))]
        );
        assert_eq!(settled(&mut c, 1, false, true), [(1, Confirmation::Ack)]);
    }

    proptest::proptest! {
        /// Every publish resolves with what happened to it, whatever order RabbitMQ's confirm
        /// coalescing produces: returns, single and `multiple` acks and nacks.
        #[test]
        fn returns_resolve_the_publish_they_belong_to(
            fates in proptest::collection::vec(0u8..3, 1..40),
            schedule in proptest::collection::vec(0u8..4, 0..120),
        ) {
            let route = (ShortStr::from_static("hx"), ShortStr::from_static("k"));
            let mut c = Confirms::default();
            for _ in &fates {
                c.publish(Some(route.clone()));
            }
            let mut got = std::collections::BTreeMap::new();
            for frame in model::Broker::new(&fates).run(&schedule) {
                match frame {
                    model::Frame::Return => {
                        proptest::prop_assert!(c.returned(model::returned(&route)).is_none());
                    }
                    model::Frame::Confirm { tag, multiple, ack } => {
                        let unmatched = c.settle(tag, multiple, ack, |t, o| {
                            got.insert(t.0, o);
                        });
                        proptest::prop_assert_eq!(unmatched, Some(Vec::new()));
                    }
                }
            }
            for (i, fate) in fates.iter().enumerate() {
                let want = match fate {
                    0 => Confirmation::Ack,
                    1 => Confirmation::Returned(Box::new(model::returned(&route))),
                    _ => Confirmation::Nack,
                };
                proptest::prop_assert_eq!(got.get(&(i as u64 + 1)), Some(&want), "tag {}", i + 1);
            }
        }
    }

    /// A model of how RabbitMQ's channel confirms publishes (`rabbit_channel`'s
    /// `coalesce_and_send`): it handles publishes in order, returns an unroutable mandatory one
    /// at once and confirms it; queues confirm routed ones later, in any order; after each
    /// step it sends one `multiple` frame for the confirmed tags below the oldest unconfirmed
    /// one, then a single frame for each other.
    mod model {
        use super::*;

        pub(super) enum Frame {
            Return,
            Confirm { tag: u64, multiple: bool, ack: bool },
        }

        pub(super) fn returned(route: &(ShortStr, ShortStr)) -> Returned {
            Returned {
                reply_code: crate::ReplyCode::NO_ROUTE,
                reply_text: ShortStr::from_static("NO_ROUTE"),
                exchange: route.0.clone(),
                routing_key: route.1.clone(),
                properties: Default::default(),
                body: bytes::Bytes::new(),
            }
        }

        pub(super) struct Broker<'a> {
            /// Per publish: 0 routed and acked, 1 unroutable (returned), 2 routed and nacked.
            fates: &'a [u8],
            handled: usize,
            /// Routed publishes whose queue has not confirmed yet.
            in_queue: Vec<u64>,
            unconfirmed: std::collections::BTreeSet<u64>,
            frames: Vec<Frame>,
        }

        impl<'a> Broker<'a> {
            pub(super) fn new(fates: &'a [u8]) -> Self {
                Self {
                    fates,
                    handled: 0,
                    in_queue: Vec::new(),
                    unconfirmed: Default::default(),
                    frames: Vec::new(),
                }
            }

            /// Runs `schedule` (each step: handle the next publish, or let a queue confirm),
            /// then lets every queue confirm.
            pub(super) fn run(mut self, schedule: &[u8]) -> Vec<Frame> {
                let steps = schedule.iter().copied().chain(std::iter::repeat(0));
                for step in steps {
                    if self.handled == self.fates.len() && self.in_queue.is_empty() {
                        break;
                    }
                    let handle = self.handled < self.fates.len()
                        && (step % 2 == 0 || self.in_queue.is_empty());
                    if handle {
                        self.handle_publish();
                    } else {
                        let at = usize::from(step) % self.in_queue.len();
                        let tag = self.in_queue.swap_remove(at);
                        let ack = self.fates[tag as usize - 1] == 0;
                        self.flush(
                            if ack { vec![tag] } else { vec![] },
                            if ack { vec![] } else { vec![tag] },
                        );
                    }
                }
                self.frames
            }

            fn handle_publish(&mut self) {
                self.handled += 1;
                let tag = self.handled as u64;
                self.unconfirmed.insert(tag);
                if self.fates[tag as usize - 1] == 1 {
                    self.frames.push(Frame::Return);
                    self.flush(vec![tag], vec![]);
                } else {
                    self.in_queue.push(tag);
                }
            }

            fn flush(&mut self, acks: Vec<u64>, nacks: Vec<u64>) {
                for tag in acks.iter().chain(&nacks) {
                    self.unconfirmed.remove(tag);
                }
                self.coalesce(nacks, false);
                self.coalesce(acks, true);
            }

            fn coalesce(&mut self, mut tags: Vec<u64>, ack: bool) {
                tags.sort_unstable();
                let Some(&last) = tags.last() else { return };
                let cutoff = self.unconfirmed.first().copied().unwrap_or(last + 1);
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
