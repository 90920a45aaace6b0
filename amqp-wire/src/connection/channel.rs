//! One channel's state, and what it does with the frames the broker sends on it.
//!
//! ```text
//!  open_channel ─► Opening ──open-ok──► Open ──Channel::close / library error──► Closing
//!                     │                   │                                       │
//!                     └──── channel.close from the broker: close-ok sent ──┐   close-ok
//!                                         │                                ▼      ▼
//!                                         └──────────────────────────────► freed (number reusable)
//! ```
//! While Closing, every frame on the channel but `channel.close` / `close-ok` is dropped
//! (deliveries still in flight included), as the spec asks.

use std::collections::VecDeque;

use bytes::Bytes;

use super::content::{Assembler, ContentMethod};
use super::error::{CloseReason, Initiator, Violation};
use super::event::{Delivery, Event, RequestId, Returned};
use super::shared::Shared;
use super::tags::{Confirms, Unacked};
use crate::error::ReplyCode;
use crate::frame::content::ContentHeader;
use crate::frame::method::Method;
use crate::frame::methods::{
    BasicCancel, BasicCancelOk, ChannelClose, ChannelCloseOk, ChannelFlowOk,
};
use crate::types::{ChannelId, ShortStr};

#[derive(Debug)]
pub(crate) enum Phase {
    Opening,
    Open,
    Closing(CloseReason),
}

/// What a pending synchronous request needs done when its reply arrives.
#[derive(Debug)]
pub(crate) enum After {
    Nothing,
    /// consume-ok: register the consumer under the tag the broker confirms.
    Consume {
        /// The tag asked for (empty: the broker names it), kept so a pipelined consume
        /// cannot reuse it.
        tag: ShortStr,
        no_ack: bool,
    },
    /// cancel-ok: forget the consumer.
    Cancel,
    /// get-ok / get-empty: a message (with content) or nothing.
    Get {
        no_ack: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) request: RequestId,
    pub(crate) replies: &'static [(u16, u16)],
    pub(crate) after: After,
}

#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) tag: ShortStr,
    pub(crate) no_ack: bool,
}

/// What the connection must do after a channel handled a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Continue,
    /// The channel is over; its number is free.
    Freed,
}

#[derive(Debug)]
pub(crate) struct ChannelState {
    pub(crate) id: ChannelId,
    pub(crate) phase: Phase,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) content: Assembler,
    pub(crate) consumers: Vec<Consumer>,
    pub(crate) confirms: Option<Confirms>,
    pub(crate) tx: bool,
    pub(crate) unacked: Unacked,
    pub(crate) flow_active: bool,
    /// No-ack get requests whose get-ok is being assembled.
    get_no_ack: bool,
}

impl ChannelState {
    pub(crate) fn opening(id: ChannelId) -> Self {
        Self {
            id,
            phase: Phase::Opening,
            pending: VecDeque::new(),
            content: Assembler::default(),
            consumers: Vec::new(),
            confirms: None,
            tx: false,
            unacked: Unacked::default(),
            flow_active: true,
            get_no_ack: false,
        }
    }

    pub(crate) fn consumer(&self, tag: &ShortStr) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.tag == *tag)
    }

    /// True when `tag` names a consumer of this channel, or one whose consume-ok is awaited:
    /// the broker would take a second consume with it as a reused tag (530).
    pub(crate) fn consumer_tag_in_use(&self, tag: &ShortStr) -> bool {
        self.consumer(tag).is_some()
            || self
                .pending
                .iter()
                .any(|p| matches!(&p.after, After::Consume { tag: t, .. } if t == tag))
    }

    /// Sends `channel.close` because this library refuses what the broker sent; the broker
    /// answers close-ok and the channel ends with `reason`.
    pub(crate) fn close_by_library(&mut self, sh: &mut Shared, reason: CloseReason) {
        tracing::warn!(channel = self.id.0, %reason, "closing channel");
        let close = ChannelClose {
            reply_code: reason.code,
            reply_text: reason.text.clone(),
            class_id: reason.class_id,
            method_id: reason.method_id,
        };
        // A channel.close is small; it always fits a frame.
        let _ = sh.send(self.id, close.into());
        self.content.reset();
        self.phase = Phase::Closing(reason);
    }

    pub(crate) fn handle_method(
        &mut self,
        sh: &mut Shared,
        method: Method,
    ) -> Result<Outcome, Violation> {
        if let Phase::Closing(reason) = &mut self.phase {
            return Ok(match method {
                Method::ChannelCloseOk(_) => {
                    let reason = reason.clone();
                    self.end(sh, reason)
                }
                Method::ChannelClose(close) => {
                    // The closes crossed: confirm theirs, keep waiting for ours to be confirmed,
                    // and report their reason, which says more than ours.
                    *reason = peer_reason(&close);
                    let _ = sh.send(self.id, ChannelCloseOk.into());
                    Outcome::Continue
                }
                _ => Outcome::Continue,
            });
        }
        if self.content.is_busy() {
            return Err(Violation::new(
                ReplyCode::UNEXPECTED_FRAME,
                "method frame in the middle of content",
            ));
        }
        if let Method::ChannelClose(close) = &method {
            let _ = sh.send(self.id, ChannelCloseOk.into());
            let reason = peer_reason(close);
            return Ok(self.end(sh, reason));
        }
        if let Phase::Opening = self.phase {
            let Method::ChannelOpenOk(_) = method else {
                return Err(Violation::new(
                    ReplyCode::CHANNEL_ERROR,
                    "method on a channel before open-ok",
                ));
            };
            self.pending.pop_front();
            self.phase = Phase::Open;
            sh.events.push_back(Event::ChannelOpened(self.id));
            return Ok(Outcome::Continue);
        }
        self.handle_open(sh, method)?;
        Ok(Outcome::Continue)
    }

    fn handle_open(&mut self, sh: &mut Shared, method: Method) -> Result<(), Violation> {
        match method {
            Method::BasicDeliver(m) => self.content.start(ContentMethod::Deliver(m)),
            Method::BasicReturn(m) => self.content.start(ContentMethod::Return(m)),
            Method::BasicAck(m) => self.confirm(sh, m.delivery_tag.0, m.multiple, true),
            Method::BasicNack(m) => self.confirm(sh, m.delivery_tag.0, m.multiple, false),
            Method::BasicCancel(m) => self.cancelled_by_broker(sh, m),
            Method::ChannelFlow(m) => {
                self.flow_active = m.active;
                let _ = sh.send(self.id, ChannelFlowOk { active: m.active }.into());
                sh.events.push_back(Event::Flow {
                    channel: self.id,
                    active: m.active,
                });
            }
            reply => return self.reply(sh, reply),
        }
        Ok(())
    }

    /// A reply to the oldest pending request it may answer.
    ///
    /// RabbitMQ sends consume-ok and cancel-ok from the queue's process, through the channel
    /// process's mailbox, so the reply to a later request may overtake them (never another
    /// reply); they stay in order among themselves. A reply may therefore answer a request
    /// behind pending consumes and cancels.
    fn reply(&mut self, sh: &mut Shared, method: Method) -> Result<(), Violation> {
        let id = method.id();
        let mut at = None;
        for (i, pending) in self.pending.iter().enumerate() {
            if pending.replies.contains(&id) {
                at = Some(i);
                break;
            }
            if !matches!(pending.after, After::Consume { .. } | After::Cancel) {
                break;
            }
        }
        let Some(Pending { request, after, .. }) = at.and_then(|i| self.pending.remove(i)) else {
            return Err(unexpected(&method));
        };
        match (after, method) {
            (After::Get { no_ack }, Method::BasicGetOk(m)) => {
                self.get_no_ack = no_ack;
                self.content.start(ContentMethod::GetOk(request, m));
            }
            (After::Get { .. }, Method::BasicGetEmpty(_)) => {
                sh.events.push_back(Event::GetReply {
                    channel: self.id,
                    request,
                    message: None,
                });
            }
            (after, method) => {
                match (&after, &method) {
                    (After::Consume { no_ack, .. }, Method::BasicConsumeOk(ok))
                        if self.consumer(&ok.consumer_tag).is_none() =>
                    {
                        self.consumers.push(Consumer {
                            tag: ok.consumer_tag.clone(),
                            no_ack: *no_ack,
                        });
                    }
                    (After::Cancel, Method::BasicCancelOk(ok)) => {
                        self.consumers.retain(|c| c.tag != ok.consumer_tag);
                    }
                    _ => {}
                }
                sh.events.push_back(Event::Reply {
                    channel: self.id,
                    request,
                    method,
                });
            }
        }
        Ok(())
    }

    fn confirm(&mut self, sh: &mut Shared, tag: u64, multiple: bool, ack: bool) {
        let channel = self.id;
        let known = match &mut self.confirms {
            Some(confirms) => confirms.settle(tag, multiple, ack, |tag, outcome| {
                sh.events.push_back(Event::Confirm {
                    channel,
                    tag,
                    outcome,
                });
            }),
            None => false,
        };
        if !known {
            let text = format!("PRECONDITION_FAILED - broker confirmed unknown delivery tag {tag}");
            let method = if ack { (60, 80) } else { (60, 120) };
            let mut reason = CloseReason::library(ReplyCode::PRECONDITION_FAILED, &text);
            (reason.class_id, reason.method_id) = method;
            self.close_by_library(sh, reason);
        }
    }

    fn cancelled_by_broker(&mut self, sh: &mut Shared, m: BasicCancel) {
        self.consumers.retain(|c| c.tag != m.consumer_tag);
        if !m.no_wait {
            let _ = sh.send(
                self.id,
                BasicCancelOk {
                    consumer_tag: m.consumer_tag.clone(),
                }
                .into(),
            );
        }
        sh.events.push_back(Event::ConsumerCancelled {
            channel: self.id,
            consumer_tag: m.consumer_tag,
        });
    }

    /// A content header, by reference: its properties are taken, and `header` keeps defaults.
    pub(crate) fn handle_header(
        &mut self,
        sh: &mut Shared,
        header: &mut ContentHeader,
    ) -> Result<(), Violation> {
        if let Phase::Closing(_) = self.phase {
            return Ok(());
        }
        if self.content.awaits_header() && header.body_size > sh.max_message_size {
            let text = format!(
                "PRECONDITION_FAILED - message of {} octets exceeds max_message_size {}",
                header.body_size, sh.max_message_size
            );
            self.close_by_library(
                sh,
                CloseReason::library(ReplyCode::PRECONDITION_FAILED, &text),
            );
            return Ok(());
        }
        if let Some(body) = self.content.header(header)? {
            self.complete(sh, body);
        }
        Ok(())
    }

    pub(crate) fn handle_body(&mut self, sh: &mut Shared, chunk: Bytes) -> Result<(), Violation> {
        if let Phase::Closing(_) = self.phase {
            return Ok(());
        }
        if let Some(body) = self.content.body(chunk)? {
            self.complete(sh, body);
        }
        Ok(())
    }

    /// The content is complete: queues its event.
    ///
    /// The event is built where it is queued, from the assembler's parts: a delivery is 512
    /// octets, and each value in between (a message, then the event) would be another copy.
    fn complete(&mut self, sh: &mut Shared, body: Bytes) {
        let channel = self.id;
        let Some(method) = self.content.take_method() else {
            return;
        };
        match method {
            ContentMethod::Deliver(m) => {
                // An unknown consumer (cancelled, its cancel-ok not yet here) still gets an ack.
                if !self.consumer(&m.consumer_tag).is_some_and(|c| c.no_ack) {
                    self.unacked.push(m.delivery_tag);
                }
                sh.events.push_back(Event::Delivery {
                    channel,
                    delivery: Delivery {
                        consumer_tag: m.consumer_tag,
                        delivery_tag: m.delivery_tag,
                        redelivered: m.redelivered,
                        exchange: m.exchange,
                        routing_key: m.routing_key,
                        properties: self.content.take_properties(),
                        body,
                    },
                });
            }
            ContentMethod::GetOk(request, m) => {
                if !self.get_no_ack {
                    self.unacked.push(m.delivery_tag);
                }
                let delivery = Delivery {
                    consumer_tag: ShortStr::new(),
                    delivery_tag: m.delivery_tag,
                    redelivered: m.redelivered,
                    exchange: m.exchange,
                    routing_key: m.routing_key,
                    properties: self.content.take_properties(),
                    body,
                };
                sh.events.push_back(Event::GetReply {
                    channel,
                    request,
                    message: Some((delivery, m.message_count)),
                });
            }
            ContentMethod::Return(m) => {
                let returned = Returned {
                    reply_code: m.reply_code,
                    reply_text: m.reply_text,
                    exchange: m.exchange,
                    routing_key: m.routing_key,
                    properties: self.content.take_properties(),
                    body,
                };
                let unmatched = match &mut self.confirms {
                    Some(confirms) => confirms.returned(returned),
                    None => Some(returned),
                };
                if let Some(message) = unmatched {
                    sh.events.push_back(Event::Returned {
                        channel,
                        message: Box::new(message),
                    });
                }
            }
        }
    }

    /// The channel is over: its requests and unconfirmed publishes fail with `reason`.
    fn end(&mut self, sh: &mut Shared, reason: CloseReason) -> Outcome {
        tracing::debug!(channel = self.id.0, %reason, "channel closed");
        sh.events.push_back(Event::ChannelClosed {
            channel: self.id,
            reason,
        });
        Outcome::Freed
    }
}

fn peer_reason(close: &ChannelClose) -> CloseReason {
    CloseReason {
        code: close.reply_code,
        text: close.reply_text.clone(),
        class_id: close.class_id,
        method_id: close.method_id,
        initiator: Initiator::Peer,
    }
}

/// A method the broker should not have sent on an open channel now.
fn unexpected(method: &Method) -> Violation {
    let (code, text) = match method.class_id() {
        10 => (ReplyCode::CHANNEL_ERROR, "connection method on a channel"),
        _ => (
            ReplyCode::UNEXPECTED_FRAME,
            "method not expected on this channel now",
        ),
    };
    Violation {
        code,
        text,
        class_id: method.class_id(),
        method_id: method.method_id(),
    }
}
