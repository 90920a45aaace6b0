//! [`Channel`]: the commands an application gives on one open channel.

use bytes::Bytes;

use super::channel::{After, ChannelState, Consumer, Pending, Phase};
use super::error::{CloseReason, Initiator, UsageError};
use super::event::RequestId;
use super::shared::Shared;
use super::tags::{Confirms, Returnable};
use crate::error::ReplyCode;
use crate::frame::FRAME_OVERHEAD;
use crate::frame::content::{BasicProperties, ContentHeader};
use crate::frame::method::Method;
use crate::frame::methods::{BasicAck, BasicNack, BasicPublish, BasicReject, ChannelClose};
use crate::types::{ChannelId, DeliveryTag, ShortStr};

/// A borrowed view of one open channel, from [`super::Connection::channel`]. Commands queue
/// frames and never block; replies come back as [`super::Event`]s.
///
/// ```
/// # use amqp_wire::connection::{Connection, ClientConfig};
/// # use amqp_wire::methods::QueueDeclare;
/// # use amqp_wire::{ChannelId, ShortStr};
/// # fn example(conn: &mut Connection, ch: ChannelId) -> Result<(), amqp_wire::connection::UsageError> {
/// let declare = QueueDeclare { queue: ShortStr::from_static("jobs"), durable: true, ..Default::default() };
/// let request = conn.channel(ch)?.call(declare)?;
/// // ... later, Event::Reply { request, method: Method::QueueDeclareOk(..), .. } answers it.
/// # let _ = request; Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Channel<'a> {
    pub(crate) state: &'a mut ChannelState,
    pub(crate) shared: &'a mut Shared,
}

impl Channel<'_> {
    /// The channel's number.
    pub fn id(&self) -> ChannelId {
        self.state.id
    }

    /// Sends a synchronous method (or `basic.recover-async`): the exchange and queue methods,
    /// `basic.qos`, `consume`, `cancel`, `get`, `recover`, `confirm.select`, the `tx` methods
    /// and `channel.flow`. Returns the id its reply will carry, or `None` when no reply
    /// comes (`nowait`). Requests may be pipelined; replies come in order.
    ///
    /// Methods RabbitMQ answers by closing the whole connection are refused here instead:
    /// `basic.qos` with a prefetch size, `basic.recover` without requeue, `channel.flow` to
    /// pause, a consumer tag already in use on the channel.
    ///
    /// # Errors
    /// A [`UsageError`] when the method is not one to send this way or would break a rule;
    /// nothing is sent then.
    pub fn call(&mut self, method: impl Into<Method>) -> Result<Option<RequestId>, UsageError> {
        let method = method.into();
        let after = self.check(&method)?;
        let replies = method.replies();
        let consume = match &method {
            Method::BasicConsume(m) if m.no_wait => Some(Consumer {
                tag: m.consumer_tag.clone(),
                no_ack: m.no_ack,
            }),
            _ => None,
        };
        let cancel = match &method {
            Method::BasicCancel(m) if m.no_wait => Some(m.consumer_tag.clone()),
            _ => None,
        };
        let confirm_select = matches!(method, Method::ConfirmSelect(_));
        let tx_select = matches!(method, Method::TxSelect(_));
        self.shared.send(self.state.id, method)?;
        // The frame is queued: now the state follows it.
        if let Some(consumer) = consume {
            self.state.consumers.push(consumer);
        }
        if let Some(tag) = cancel {
            self.state.consumers.retain(|c| c.tag != tag);
        }
        if confirm_select && self.state.confirms.is_none() {
            // Publishes are numbered from the first one after confirm.select, even before
            // select-ok arrives.
            self.state.confirms = Some(Confirms::default());
        }
        self.state.tx |= tx_select;
        if replies.is_empty() {
            return Ok(None);
        }
        let request = self.shared.next_request();
        self.state.pending.push_back(Pending {
            request,
            replies,
            after,
        });
        Ok(Some(request))
    }

    /// Checks a method for [`Channel::call`] and says what its reply needs.
    fn check(&self, method: &Method) -> Result<After, UsageError> {
        Ok(match method {
            Method::ExchangeDeclare(_)
            | Method::ExchangeDelete(_)
            | Method::ExchangeBind(_)
            | Method::ExchangeUnbind(_)
            | Method::QueueDeclare(_)
            | Method::QueueBind(_)
            | Method::QueuePurge(_)
            | Method::QueueDelete(_)
            | Method::QueueUnbind(_)
            | Method::TxCommit(_)
            | Method::TxRollback(_) => After::Nothing,
            Method::BasicQos(m) if m.prefetch_size != 0 => {
                return Err(UsageError::NotAllowed(
                    "basic.qos with a prefetch size (RabbitMQ: 540)",
                ));
            }
            Method::BasicRecover(m) if !m.requeue => {
                return Err(UsageError::NotAllowed(
                    "basic.recover without requeue (RabbitMQ: 540)",
                ));
            }
            Method::BasicRecoverAsync(m) if !m.requeue => {
                return Err(UsageError::NotAllowed(
                    "basic.recover without requeue (RabbitMQ: 540)",
                ));
            }
            Method::ChannelFlow(m) if !m.active => {
                return Err(UsageError::NotAllowed(
                    "channel.flow to pause (RabbitMQ: 540)",
                ));
            }
            Method::BasicQos(_)
            | Method::BasicRecover(_)
            | Method::BasicRecoverAsync(_)
            | Method::ChannelFlow(_) => After::Nothing,
            Method::BasicConsume(m) => {
                if !m.consumer_tag.is_empty() && self.state.consumer_tag_in_use(&m.consumer_tag) {
                    return Err(UsageError::ConsumerTagInUse(m.consumer_tag.clone()));
                }
                if m.no_wait && m.consumer_tag.is_empty() {
                    return Err(UsageError::NotAllowed(
                        "basic.consume with nowait needs a consumer tag",
                    ));
                }
                After::Consume {
                    tag: m.consumer_tag.clone(),
                    no_ack: m.no_ack,
                }
            }
            Method::BasicCancel(_) => After::Cancel,
            Method::BasicGet(m) => After::Get { no_ack: m.no_ack },
            Method::ConfirmSelect(_) if self.state.tx => return Err(UsageError::ConfirmAndTx),
            Method::TxSelect(_) if self.state.confirms.is_some() => {
                return Err(UsageError::ConfirmAndTx);
            }
            Method::ConfirmSelect(_) | Method::TxSelect(_) => After::Nothing,
            other => return Err(UsageError::NotAllowed(other.name())),
        })
    }

    /// Publishes a message: method, header and body frames, the body cut by `frame_max` and
    /// sent by reference. In confirm mode, returns the tag its [`super::Event::Confirm`]
    /// will carry.
    ///
    /// # Errors
    /// [`UsageError::FlowPaused`] while the broker has paused the channel;
    /// [`UsageError::NotAllowed`] for `immediate` (RabbitMQ closes the connection for it);
    /// [`UsageError::FrameTooLarge`] when the header frame does not fit `frame_max`.
    pub fn basic_publish(
        &mut self,
        publish: BasicPublish,
        properties: &BasicProperties,
        body: Bytes,
    ) -> Result<Option<DeliveryTag>, UsageError> {
        if !self.state.flow_active {
            return Err(UsageError::FlowPaused);
        }
        if publish.immediate {
            return Err(UsageError::NotAllowed(
                "basic.publish with immediate (RabbitMQ: 540)",
            ));
        }
        let frame_max = self.shared.frame_max;
        let header = ContentHeader {
            body_size: body.len() as u64,
            properties: properties.clone(),
        };
        let largest = Method::from(publish.clone())
            .encoded_len()
            .max(header.encoded_len())
            + FRAME_OVERHEAD;
        if frame_max != 0 && largest > frame_max as usize {
            return Err(UsageError::FrameTooLarge {
                size: largest,
                frame_max,
            });
        }
        // A mandatory publish in confirm mode keeps what a return would carry back, to find
        // the publish a return belongs to (refcounted: the body is not copied).
        let returnable = (publish.mandatory && self.state.confirms.is_some()).then(|| Returnable {
            exchange: publish.exchange.clone(),
            routing_key: publish.routing_key.clone(),
            properties: properties.clone(),
            body: body.clone(),
        });
        self.shared
            .out
            .push_content_frames(self.state.id, &publish.into(), &header, body, frame_max)
            .map_err(|_| UsageError::FrameTooLarge {
                size: largest,
                frame_max,
            })?;
        Ok(self.state.confirms.as_mut().map(|c| c.publish(returnable)))
    }

    /// Acknowledges a delivery (with `multiple`, every one up to it).
    ///
    /// # Errors
    /// [`UsageError::UnknownDeliveryTag`] when no such delivery awaits an ack on this channel
    /// (already settled, or from a consumer without acks): the broker would close the channel.
    pub fn basic_ack(&mut self, tag: DeliveryTag, multiple: bool) -> Result<(), UsageError> {
        self.settle(tag, multiple)?;
        self.shared.send(
            self.state.id,
            BasicAck {
                delivery_tag: tag,
                multiple,
            }
            .into(),
        )
    }

    /// Rejects deliveries (with `multiple`, every one up to `tag`), requeueing them or not.
    ///
    /// # Errors
    /// As [`Channel::basic_ack`].
    pub fn basic_nack(
        &mut self,
        tag: DeliveryTag,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), UsageError> {
        self.settle(tag, multiple)?;
        self.shared.send(
            self.state.id,
            BasicNack {
                delivery_tag: tag,
                multiple,
                requeue,
            }
            .into(),
        )
    }

    /// Rejects one delivery, requeueing it or not.
    ///
    /// # Errors
    /// As [`Channel::basic_ack`].
    pub fn basic_reject(&mut self, tag: DeliveryTag, requeue: bool) -> Result<(), UsageError> {
        self.settle(tag, false)?;
        self.shared.send(
            self.state.id,
            BasicReject {
                delivery_tag: tag,
                requeue,
            }
            .into(),
        )
    }

    fn settle(&mut self, tag: DeliveryTag, multiple: bool) -> Result<(), UsageError> {
        if self.state.unacked.settle(tag.0, multiple) {
            Ok(())
        } else {
            Err(UsageError::UnknownDeliveryTag(tag.0))
        }
    }

    /// Closes the channel. Requests still pending, and publishes not yet confirmed, fail when
    /// the broker's close-ok arrives ([`super::Event::ChannelClosed`]).
    ///
    /// # Errors
    /// Never in practice; the signature leaves room for a text that does not fit a frame.
    pub fn close(&mut self, code: ReplyCode, text: &str) -> Result<(), UsageError> {
        let reason = CloseReason::new(code, text, Initiator::Local);
        let close = ChannelClose {
            reply_code: code,
            reply_text: reason.text.clone(),
            class_id: 0,
            method_id: 0,
        };
        self.shared.send(self.state.id, close.into())?;
        self.state.content.reset();
        self.state.phase = Phase::Closing(reason);
        Ok(())
    }

    /// Publishes sent in confirm mode that await their confirm.
    pub fn unconfirmed(&self) -> usize {
        self.state.confirms.as_ref().map_or(0, Confirms::len)
    }

    /// Deliveries that await an ack, nack or reject.
    pub fn unacked(&self) -> usize {
        self.state.unacked.len()
    }

    /// True after `confirm.select` was sent.
    pub fn is_confirm_mode(&self) -> bool {
        self.state.confirms.is_some()
    }

    /// False while the broker has paused content on this channel (`channel.flow`).
    pub fn is_flow_active(&self) -> bool {
        self.state.flow_active
    }

    /// The tags of this channel's consumers.
    pub fn consumers(&self) -> impl Iterator<Item = &ShortStr> {
        self.state.consumers.iter().map(|c| &c.tag)
    }
}
