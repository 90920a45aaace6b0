//! Inbound content assembly: a content method, its header, then body frames, per channel.
//!
//! ```text
//!            deliver / get-ok / return            header (size 0: done)
//!   Idle ───────────────────────────────► Header ───────────────────────► Body ──┐
//!    ▲                                                                   │  ▲    │ body frame
//!    └──────────────────── body_size octets arrived ─────────────────────┘  └────┘
//! ```
//! Anything else on the channel meanwhile is 505 UNEXPECTED_FRAME; a body past the announced
//! size is 501 FRAME_ERROR. A one-frame body is the received `Bytes` itself; a body of several
//! frames is copied once into a buffer sized from `body_size`, which the caller has bounded.

use bytes::{Bytes, BytesMut};

use super::error::Violation;
use super::event::{Delivery, RequestId, Returned};
use crate::error::ReplyCode;
use crate::frame::content::ContentHeader;
use crate::frame::methods::{BasicDeliver, BasicGetOk, BasicReturn};

/// The method a content belongs to.
#[derive(Debug)]
pub(crate) enum ContentMethod {
    Deliver(BasicDeliver),
    GetOk(RequestId, BasicGetOk),
    Return(BasicReturn),
}

/// A complete inbound message.
#[derive(Debug)]
pub(crate) enum Message {
    Delivery(Delivery),
    Got(RequestId, Delivery, u32),
    Returned(Returned),
}

const UNEXPECTED_HEADER: Violation = Violation::new(
    ReplyCode::UNEXPECTED_FRAME,
    "content header without a content method",
);
const UNEXPECTED_BODY: Violation = Violation::new(
    ReplyCode::UNEXPECTED_FRAME,
    "content body without a content header",
);
const BODY_OVERRUN: Violation = Violation::new(
    ReplyCode::FRAME_ERROR,
    "content body longer than its header announced",
);

#[derive(Debug, Default)]
// Boxing the header would cost an allocation per delivery; one State lives per channel.
#[allow(clippy::large_enum_variant)]
enum State {
    #[default]
    Idle,
    Header(ContentMethod),
    Body {
        method: ContentMethod,
        header: ContentHeader,
        body: Body,
    },
}

/// The body received so far.
#[derive(Debug)]
enum Body {
    Empty,
    /// One frame, kept as it came: no copy.
    Single(Bytes),
    /// Several frames, copied together.
    Joined(BytesMut),
}

/// The content state of one channel.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    state: State,
    /// Octets of body still to come.
    remaining: u64,
}

impl Assembler {
    /// True while a content is between its method and its last body frame: no other method
    /// may arrive on the channel then.
    pub(crate) fn is_busy(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// A content method arrived; the caller has checked [`Assembler::is_busy`].
    pub(crate) fn start(&mut self, method: ContentMethod) {
        self.state = State::Header(method);
    }

    /// A header arrived. Returns the message when the body is empty. The caller checks
    /// `body_size` against its limit before calling.
    pub(crate) fn header(&mut self, header: ContentHeader) -> Result<Option<Message>, Violation> {
        let State::Header(method) = std::mem::take(&mut self.state) else {
            return Err(UNEXPECTED_HEADER);
        };
        if header.body_size == 0 {
            return Ok(Some(finish(method, header, Bytes::new())));
        }
        self.remaining = header.body_size;
        self.state = State::Body {
            method,
            header,
            body: Body::Empty,
        };
        Ok(None)
    }

    /// True when the channel waits for a content header.
    pub(crate) fn awaits_header(&self) -> bool {
        matches!(self.state, State::Header(_))
    }

    /// A body frame arrived. Returns the message when it was the last.
    pub(crate) fn body(&mut self, chunk: Bytes) -> Result<Option<Message>, Violation> {
        let State::Body { body, .. } = &mut self.state else {
            return Err(UNEXPECTED_BODY);
        };
        let len = chunk.len() as u64;
        if len > self.remaining {
            return Err(BODY_OVERRUN);
        }
        self.remaining -= len;
        *body = match std::mem::replace(body, Body::Empty) {
            Body::Empty if self.remaining == 0 => Body::Single(chunk),
            Body::Empty => {
                // Bounded: the caller refused a body_size above its maximum message size.
                let mut joined = BytesMut::with_capacity((len + self.remaining) as usize);
                joined.extend_from_slice(&chunk);
                Body::Joined(joined)
            }
            Body::Joined(mut joined) => {
                joined.extend_from_slice(&chunk);
                Body::Joined(joined)
            }
            // A Single body is complete, so no frame can follow it here (remaining was 0).
            Body::Single(_) => return Err(BODY_OVERRUN),
        };
        if self.remaining > 0 {
            return Ok(None);
        }
        let State::Body {
            method,
            header,
            body,
        } = std::mem::take(&mut self.state)
        else {
            return Err(UNEXPECTED_BODY);
        };
        let body = match body {
            Body::Empty => Bytes::new(),
            Body::Single(b) => b,
            Body::Joined(b) => b.freeze(),
        };
        Ok(Some(finish(method, header, body)))
    }

    /// Forgets a partial content (its channel closed).
    pub(crate) fn reset(&mut self) {
        self.state = State::Idle;
        self.remaining = 0;
    }
}

fn finish(method: ContentMethod, header: ContentHeader, body: Bytes) -> Message {
    let properties = header.properties;
    match method {
        ContentMethod::Deliver(m) => Message::Delivery(Delivery {
            consumer_tag: m.consumer_tag,
            delivery_tag: m.delivery_tag,
            redelivered: m.redelivered,
            exchange: m.exchange,
            routing_key: m.routing_key,
            properties,
            body,
        }),
        ContentMethod::GetOk(request, m) => Message::Got(
            request,
            Delivery {
                consumer_tag: crate::ShortStr::new(),
                delivery_tag: m.delivery_tag,
                redelivered: m.redelivered,
                exchange: m.exchange,
                routing_key: m.routing_key,
                properties,
                body,
            },
            m.message_count,
        ),
        ContentMethod::Return(m) => Message::Returned(Returned {
            reply_code: m.reply_code,
            reply_text: m.reply_text,
            exchange: m.exchange,
            routing_key: m.routing_key,
            properties,
            body,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeliveryTag, ShortStr};

    fn deliver() -> ContentMethod {
        ContentMethod::Deliver(BasicDeliver {
            consumer_tag: ShortStr::from_static("c"),
            delivery_tag: DeliveryTag(1),
            ..Default::default()
        })
    }

    fn header(size: u64) -> ContentHeader {
        ContentHeader {
            body_size: size,
            ..Default::default()
        }
    }

    #[test]
    fn a_single_frame_body_is_not_copied() {
        let mut a = Assembler::default();
        a.start(deliver());
        assert!(a.header(header(5)).unwrap().is_none());
        let chunk = Bytes::from_static(b"hello");
        let Some(Message::Delivery(d)) = a.body(chunk.clone()).unwrap() else {
            panic!()
        };
        assert_eq!(d.body.as_ptr(), chunk.as_ptr());
        assert!(!a.is_busy());
    }

    #[test]
    fn several_frames_are_joined_in_order() {
        let mut a = Assembler::default();
        a.start(deliver());
        a.header(header(6)).unwrap();
        assert!(a.body(Bytes::from_static(b"ab")).unwrap().is_none());
        assert!(a.body(Bytes::from_static(b"cd")).unwrap().is_none());
        let Some(Message::Delivery(d)) = a.body(Bytes::from_static(b"ef")).unwrap() else {
            panic!()
        };
        assert_eq!(&d.body[..], b"abcdef");
    }

    #[test]
    fn an_empty_body_completes_at_the_header() {
        let mut a = Assembler::default();
        a.start(deliver());
        assert!(matches!(
            a.header(header(0)),
            Ok(Some(Message::Delivery(_)))
        ));
        assert!(!a.is_busy());
    }

    #[test]
    fn sequencing_violations() {
        let mut a = Assembler::default();
        assert_eq!(a.header(header(1)).unwrap_err(), UNEXPECTED_HEADER);
        assert_eq!(
            a.body(Bytes::from_static(b"x")).unwrap_err(),
            UNEXPECTED_BODY
        );
        a.start(deliver());
        assert_eq!(
            a.body(Bytes::from_static(b"x")).unwrap_err(),
            UNEXPECTED_BODY
        );
        let mut a = Assembler::default();
        a.start(deliver());
        a.header(header(2)).unwrap();
        assert_eq!(
            a.body(Bytes::from_static(b"xyz")).unwrap_err(),
            BODY_OVERRUN
        );
        assert_eq!(BODY_OVERRUN.code, ReplyCode::FRAME_ERROR);
    }
}
