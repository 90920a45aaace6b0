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
use super::event::RequestId;
use crate::error::ReplyCode;
use crate::frame::content::{BasicProperties, ContentHeader};
use crate::frame::methods::{BasicDeliver, BasicGetOk, BasicReturn};

/// The method a content belongs to.
#[derive(Debug)]
pub(crate) enum ContentMethod {
    Deliver(BasicDeliver),
    GetOk(RequestId, BasicGetOk),
    Return(BasicReturn),
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

/// Where a channel's content is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Idle,
    /// The method came; its header is next.
    Header,
    /// The header came; `remaining` octets of body are next.
    Body,
}

/// The body received so far. A body that comes in one frame is never stored: it completes
/// the message as it came, without a copy.
#[derive(Debug, Default)]
enum Body {
    #[default]
    Empty,
    /// Several frames, copied together.
    Joined(BytesMut),
}

/// The content state of one channel.
///
/// The parts of the message are kept in fields of their own, not in the variants of one
/// state enum: the properties alone are 368 octets, and every transition of such an enum
/// (`mem::take` and a new variant) would copy all of it, several times per delivery. Here the
/// properties are moved in once, from the header frame, and out once, into the event.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    stage: Stage,
    /// The content's method: `Some` from `start` until the message is taken.
    method: Option<ContentMethod>,
    /// The header's properties, once it came.
    properties: BasicProperties,
    body: Body,
    /// Octets of body still to come.
    remaining: u64,
}

impl Assembler {
    /// True while a content is between its method and its last body frame: no other method
    /// may arrive on the channel then.
    pub(crate) fn is_busy(&self) -> bool {
        self.stage != Stage::Idle
    }

    /// A content method arrived; the caller has checked [`Assembler::is_busy`].
    pub(crate) fn start(&mut self, method: ContentMethod) {
        self.method = Some(method);
        self.stage = Stage::Header;
    }

    /// A header arrived: its properties are taken (`header` is left with defaults). Returns
    /// the (empty) body when the message is complete; then [`Assembler::take_method`] and
    /// [`Assembler::take_properties`] give the rest. The caller checks `body_size` against
    /// its limit before calling.
    pub(crate) fn header(
        &mut self,
        header: &mut ContentHeader,
    ) -> Result<Option<Bytes>, Violation> {
        if self.stage != Stage::Header {
            return Err(UNEXPECTED_HEADER);
        }
        self.properties = std::mem::take(&mut header.properties);
        if header.body_size == 0 {
            self.stage = Stage::Idle;
            return Ok(Some(Bytes::new()));
        }
        self.remaining = header.body_size;
        self.stage = Stage::Body;
        Ok(None)
    }

    /// True when the channel waits for a content header.
    pub(crate) fn awaits_header(&self) -> bool {
        self.stage == Stage::Header
    }

    /// A body frame arrived. Returns the whole body when it was the last, as for
    /// [`Assembler::header`].
    pub(crate) fn body(&mut self, chunk: Bytes) -> Result<Option<Bytes>, Violation> {
        if self.stage != Stage::Body {
            return Err(UNEXPECTED_BODY);
        }
        let len = chunk.len() as u64;
        if len > self.remaining {
            return Err(BODY_OVERRUN);
        }
        self.remaining -= len;
        let body = match &mut self.body {
            Body::Empty if self.remaining == 0 => chunk,
            Body::Empty => {
                // Sized by what arrived, not by the announced size (the peer's word): the buffer
                // grows with the frames that come, at most doubling.
                let mut joined = BytesMut::with_capacity(chunk.len());
                joined.extend_from_slice(&chunk);
                self.body = Body::Joined(joined);
                return Ok(None);
            }
            Body::Joined(joined) => {
                joined.extend_from_slice(&chunk);
                if self.remaining > 0 {
                    return Ok(None);
                }
                std::mem::take(joined).freeze()
            }
        };
        self.body = Body::Empty;
        self.stage = Stage::Idle;
        Ok(Some(body))
    }

    /// The method of the message just completed (`None` once taken).
    pub(crate) fn take_method(&mut self) -> Option<ContentMethod> {
        self.method.take()
    }

    /// The properties of the message just completed.
    pub(crate) fn take_properties(&mut self) -> BasicProperties {
        std::mem::take(&mut self.properties)
    }

    /// Forgets a partial content (its channel closed).
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
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
            properties: BasicProperties {
                delivery_mode: Some(2),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_single_frame_body_is_not_copied() {
        let mut a = Assembler::default();
        a.start(deliver());
        let mut h = header(5);
        assert!(a.header(&mut h).unwrap().is_none());
        assert_eq!(h.properties, BasicProperties::default(), "properties taken");
        let chunk = Bytes::from_static(b"hello");
        let body = a.body(chunk.clone()).unwrap().expect("complete");
        assert_eq!(body.as_ptr(), chunk.as_ptr());
        assert!(!a.is_busy());
        assert!(matches!(a.take_method(), Some(ContentMethod::Deliver(_))));
        assert_eq!(a.take_properties().delivery_mode, Some(2));
        assert!(a.take_method().is_none());
    }

    #[test]
    fn several_frames_are_joined_in_order() {
        let mut a = Assembler::default();
        a.start(deliver());
        a.header(&mut header(6)).unwrap();
        assert!(a.body(Bytes::from_static(b"ab")).unwrap().is_none());
        assert!(a.body(Bytes::from_static(b"cd")).unwrap().is_none());
        let body = a
            .body(Bytes::from_static(b"ef"))
            .unwrap()
            .expect("complete");
        assert_eq!(&body[..], b"abcdef");
        assert!(!a.is_busy());
        // The next content starts from nothing.
        a.start(deliver());
        a.header(&mut header(1)).unwrap();
        assert_eq!(
            &a.body(Bytes::from_static(b"g")).unwrap().unwrap()[..],
            b"g"
        );
    }

    #[test]
    fn an_empty_body_completes_at_the_header() {
        let mut a = Assembler::default();
        a.start(deliver());
        assert_eq!(a.header(&mut header(0)), Ok(Some(Bytes::new())));
        assert!(!a.is_busy());
        assert!(a.take_method().is_some());
    }

    #[test]
    fn sequencing_violations() {
        let mut a = Assembler::default();
        assert_eq!(a.header(&mut header(1)).unwrap_err(), UNEXPECTED_HEADER);
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
        a.header(&mut header(2)).unwrap();
        assert_eq!(
            a.body(Bytes::from_static(b"xyz")).unwrap_err(),
            BODY_OVERRUN
        );
        assert_eq!(BODY_OVERRUN.code, ReplyCode::FRAME_ERROR);
        // A body frame after the body is complete.
        let mut a = Assembler::default();
        a.start(deliver());
        a.header(&mut header(1)).unwrap();
        a.body(Bytes::from_static(b"x")).unwrap();
        assert_eq!(
            a.body(Bytes::from_static(b"y")).unwrap_err(),
            UNEXPECTED_BODY
        );
    }
}
