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

    /// A `basic.return` arrived. RabbitMQ sends it before the ack of the same publish, so it
    /// belongs to the oldest mandatory publish to that exchange and routing key that has no
    /// return yet. Gives the message back when no publish matches.
    pub(crate) fn returned(&mut self, message: Returned) -> Option<Returned> {
        let slot = self.pending.iter_mut().find(|p| {
            p.returned.is_none()
                && p.route
                    .as_ref()
                    .is_some_and(|(ex, rk)| *ex == message.exchange && *rk == message.routing_key)
        });
        match slot {
            Some(p) => {
                p.returned = Some(Box::new(message));
                None
            }
            None => Some(message),
        }
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
