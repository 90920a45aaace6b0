//! The engine's events, delivered to whoever waits for them: replies, deliveries, confirms,
//! returns, and the ends of channels and connections.

use std::sync::Arc;

use amqp_wire::connection::{
    CloseReason, Confirmation as WireConfirmation, Connection as Engine, ConnectionError,
    Delivery as WireDelivery, Event, Initiator, RequestId,
};
use amqp_wire::{ChannelId, DeliveryTag, Method, ReplyCode};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::error::TrySendError;

use crate::channel::ChannelShared;
use crate::command::{ConfirmSlot, Reply, Settle};
use crate::connection::{ConnectionEvent, is_local_close};
use crate::consumer::{ConsumerItem, Delivery, delivery_cost};
use crate::error::Error;
use crate::publish::Confirmation;
use crate::router::{Parked, Room, Route, Router, requeue, settle_quietly};
use crate::topology;

impl Router {
    pub(crate) fn route(&mut self, event: Event, engine: &mut Engine) {
        match event {
            Event::Connected {
                server_properties,
                tune,
            } => {
                if let Ok(mut session) = self.conn.session.lock() {
                    session.server_properties = server_properties;
                    session.tune = tune;
                }
                self.session_open = true;
                if self.ever_connected {
                    self.start_replay(engine);
                } else {
                    self.ever_connected = true;
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
            }
            Event::ChannelOpened(id) if self.replay.is_some() => self.replay_opened(id, engine),
            Event::ChannelOpened(id) => self.opened(id, engine),
            Event::Reply {
                channel: ChannelId::CONNECTION,
                request,
                method,
            } => {
                if let Some(reply) = self.secrets.remove(&request) {
                    let _ = reply.send(Ok(Reply::Method(method)));
                }
            }
            Event::Reply {
                channel,
                request,
                method,
            } if self.is_replay_request(request) => {
                self.replay_reply(channel, request, method, engine);
            }
            Event::Reply {
                channel,
                request,
                method,
            } => self.reply(channel, request, method),
            Event::GetReply {
                channel,
                request,
                message,
            } => self.got(channel, request, message, engine),
            Event::Delivery { channel, delivery } => self.deliver(channel, delivery, engine),
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                let route = self.routes.get_mut(channel);
                let sink = route.and_then(|r| {
                    r.consumer_specs.remove(&consumer_tag);
                    r.forget_consumer(&consumer_tag)
                });
                if let Some(sink) = sink {
                    if let Ok(mut end) = sink.end.lock() {
                        *end = Some(Error::ConsumerCancelled(consumer_tag.to_string()));
                    }
                }
            }
            Event::Returned { channel, message } => self.returned(channel, *message),
            Event::Confirm {
                channel,
                tag,
                outcome,
            } => self.confirmed(channel, tag, outcome),
            Event::Flow { channel, active } => {
                tracing::info!(channel = channel.0, active, "broker flow control")
            }
            Event::ChannelClosed { channel, reason } if self.replay.is_some() => {
                self.replay_channel_closed(channel, reason, engine);
            }
            Event::ChannelClosed { channel, reason } => self.channel_closed(channel, reason),
            Event::Blocked { reason } => {
                tracing::warn!(%reason, "broker blocked publishing");
                self.blocked.send_replace(true);
                self.emit(ConnectionEvent::Blocked { reason });
            }
            Event::Unblocked => {
                tracing::info!("broker unblocked publishing");
                self.blocked.send_replace(false);
                self.emit(ConnectionEvent::Unblocked);
            }
            // The driver decides what follows: recovery, or the end. What waits on this
            // session's replies fails now.
            Event::Closed(error) => self.session_closing(error),
            other => tracing::debug!(event = ?other, "event not routed"),
        }
    }

    /// A return that resolves no publish: to the channel's listener, or counted and dropped.
    fn returned(&mut self, channel: ChannelId, message: amqp_wire::connection::Returned) {
        let listener = self.routes.get(channel).and_then(|r| r.returns.as_ref());
        let delivered = listener.is_some_and(|tx| tx.try_send(message).is_ok());
        if !delivered {
            self.conn
                .unhandled_returns
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                channel = channel.0,
                "a returned message had no listener with room; dropped (counted in Connection::unhandled_returns)"
            );
        }
    }

    /// The engine reports its session's end (its socket may still flush a close).
    fn session_closing(&mut self, error: ConnectionError) {
        tracing::debug!(%error, "session closed");
        let error = Error::Connection(error);
        if !is_local_close(&error) {
            self.fail_in_flight(&error);
        }
    }

    pub(crate) fn opened(&mut self, id: ChannelId, engine: &mut Engine) {
        self.generation += 1;
        let shared = Arc::new(ChannelShared::new(id, self.generation, self.conn.clone()));
        self.routes.insert(id, Route::new(shared.clone()));
        let taken = self
            .opening
            .remove(&id)
            .is_some_and(|reply| reply.send(Ok(shared)).is_ok());
        if !taken {
            // Whoever asked stopped waiting: close the channel rather than leak it.
            let _ = engine
                .channel(id)
                .and_then(|mut ch| ch.close(ReplyCode::SUCCESS, "abandoned"));
        }
    }

    pub(crate) fn reply(&mut self, channel: ChannelId, request: RequestId, method: Method) {
        let Some(route) = self.routes.get_mut(channel) else {
            return;
        };
        let Some(pending) = route.requests.remove(&request) else {
            return;
        };
        if let Some(request) = &pending.request {
            self.topology.record(request, &method);
            route.remember(request, &method);
        }
        match (&method, &pending.request) {
            (Method::BasicConsumeOk(ok), Some(Method::BasicConsume(spec))) => {
                if let Some(mut sink) = pending.consumer {
                    sink.stream = self.topology.consumes_stream(spec);
                    route.consumers.insert(ok.consumer_tag.clone(), sink);
                }
            }
            // The consumer's sink is dropped: its stream ends cleanly.
            (Method::BasicCancelOk(ok), _) => drop(route.forget_consumer(&ok.consumer_tag)),
            _ => {}
        }
        let _ = pending.reply.send(Ok(Reply::Method(method)));
    }

    pub(crate) fn got(
        &mut self,
        channel: ChannelId,
        request: RequestId,
        message: Option<(WireDelivery, u32)>,
        engine: &mut Engine,
    ) {
        let Some(route) = self.routes.get_mut(channel) else {
            return;
        };
        let pending = route.requests.remove(&request);
        let tag = message.as_ref().map(|(d, _)| d.delivery_tag);
        let message = message.map(|(mut d, count)| {
            d.delivery_tag = route.app_tag(d.delivery_tag);
            (d, count)
        });
        let delivered =
            pending.is_some_and(|p| p.reply.send(Ok(Reply::Get(message.map(Box::new)))).is_ok());
        if let (false, Some(tag)) = (delivered, tag) {
            // The caller stopped waiting: hand the message back instead of losing it.
            requeue(engine, channel, tag);
        }
    }

    pub(crate) fn deliver(
        &mut self,
        channel: ChannelId,
        mut delivery: WireDelivery,
        engine: &mut Engine,
    ) {
        let tx = self.tx.upgrade();
        let Some(route) = self.routes.get_mut(channel) else {
            return;
        };
        let tag = delivery.delivery_tag;
        delivery.delivery_tag = route.app_tag(tag);
        let (Some(sink), Some(tx)) = (route.consumers.get(&delivery.consumer_tag), tx) else {
            tracing::debug!(
                channel = channel.0,
                tag = tag.0,
                "delivery for no consumer; handed back"
            );
            // A stream goes on delivering a moment after its consumer ended, and answers a
            // nack with 540; for any other queue a nack loses nothing.
            let stream = route.ended_streams.contains(&delivery.consumer_tag);
            settle_quietly(engine, channel, tag, Settle::give_back(stream));
            return;
        };
        let how = Settle::give_back(sink.stream);
        let consumer_tag = delivery.consumer_tag.clone();
        let offset = topology::stream_offset(&delivery.properties);
        let cost = charge_of(&delivery, sink.budget_total);
        let charge = sink.budget.clone().try_acquire_many_owned(cost).ok();
        let delivery = Delivery::new(
            delivery,
            tx,
            route.shared.clone(),
            (sink.no_ack, sink.stream),
        );
        let item = ConsumerItem { delivery, charge };
        let sent = match item.charge {
            Some(_) => sink.tx.try_send(item),
            None => Err(TrySendError::Full(item)),
        };
        match sent {
            // The application will read it: a recovery resumes the stream after it.
            Ok(()) => route.advance_stream(&consumer_tag, offset),
            // Nobody may read it: a cancelled consumer, a closing channel (which drops it).
            Err(TrySendError::Full(_)) if sink.cancelling || engine.channel(channel).is_err() => {
                settle_quietly(engine, channel, tag, how);
            }
            Err(TrySendError::Full(item)) => self.parked = Some(Parked::new(sink, item, how, cost)),
            Err(TrySendError::Closed(_)) => route.consumer_dropped(engine, consumer_tag, tag, how),
        }
    }

    /// The parked delivery's consumer has room (`None`: it is gone).
    pub(crate) fn unpark(&mut self, room: Option<Room>, engine: &mut Engine) {
        let Some(parked) = self.parked.take() else {
            return;
        };
        let Some(room) = room else {
            return self.give_back(engine, &parked);
        };
        let item = &parked.item;
        if let Some(route) = self.routes.get_mut(item.channel_id()) {
            route.advance_stream(
                &item.consumer_tag,
                topology::stream_offset(&item.properties),
            );
        }
        room.place.send(ConsumerItem {
            delivery: parked.item,
            charge: parked.charge.or(room.charge),
        });
    }

    pub(crate) fn confirmed(
        &mut self,
        channel: ChannelId,
        tag: DeliveryTag,
        outcome: WireConfirmation,
    ) {
        let Some(route) = self.routes.get_mut(channel) else {
            return;
        };
        let at = match route.confirms.front() {
            Some((front, _)) if *front == tag => Some(0),
            _ => route.confirms.binary_search_by_key(&tag, |(t, _)| *t).ok(),
        };
        let Some((_, slot)) = at.and_then(|i| route.confirms.remove(i)) else {
            return;
        };
        let outcome = match outcome {
            WireConfirmation::Ack => Confirmation::Ack,
            WireConfirmation::Nack => Confirmation::Nack,
            WireConfirmation::Returned(r) => Confirmation::Returned(r),
        };
        let ConfirmSlot { tx, permit, .. } = slot;
        if let Some(permit) = permit {
            self.release_later(permit);
        }
        let _ = tx.send(Ok(outcome));
    }

    /// Keeps a confirmed publish's window place until [`Router::release_windows`].
    pub(crate) fn release_later(&mut self, permit: OwnedSemaphorePermit) {
        match self.released.last_mut() {
            Some(held) if Arc::ptr_eq(held.semaphore(), permit.semaphore()) => held.merge(permit),
            _ => self.released.push(permit),
        }
    }

    /// Gives the confirm windows the places their confirms freed (the driver calls this
    /// after routing the events at hand).
    pub(crate) fn release_windows(&mut self) {
        if !self.released.is_empty() {
            self.released.clear();
        }
    }

    pub(crate) fn channel_closed(&mut self, channel: ChannelId, reason: CloseReason) {
        let clean = reason.initiator == Initiator::Local;
        if !clean {
            tracing::warn!(channel = channel.0, %reason, "channel closed");
        }
        let error = Error::ChannelClosed(reason);
        if let Some(reply) = self.opening.remove(&channel) {
            let _ = reply.send(Err(error.clone()));
        }
        if self
            .parked
            .as_ref()
            .is_some_and(|p| p.item.channel_id() == channel)
        {
            // Its channel is gone, so the broker requeues it.
            self.parked = None;
        }
        if let Some(route) = self.routes.take(channel) {
            route.end(&error, clean);
        }
    }

    pub(crate) fn connection_closed(&mut self, error: Error) {
        let clean = is_local_close(&error);
        self.session_open = false;
        self.replay = None;
        if clean {
            tracing::info!("connection closed");
        } else {
            tracing::warn!(%error, "connection closed");
        }
        let _ = self.conn.closed.set(error.clone());
        let error = self.conn.gone();
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(error.clone()));
        }
        for route in self.routes.drain() {
            route.end(&error, clean);
        }
        for (_, reply) in self.opening.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.secrets.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        for reply in self.closing.drain(..) {
            let _ = reply.send(if clean { Ok(()) } else { Err(error.clone()) });
        }
        self.parked = None;
    }

    /// The driver stopped, after `last` ended the last session: fail whatever still waits.
    pub(crate) fn finish(&mut self, last: Option<Error>) {
        if self.conn.closed.get().is_none() {
            self.connection_closed(
                last.unwrap_or(Error::Connection(ConnectionError::UnexpectedEof)),
            );
        }
    }

    /// Fails the waiters that do not belong to a channel: channel opens and secret updates.
    pub(crate) fn fail_waiting(&mut self, error: &Error) {
        for (_, reply) in self.opening.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.secrets.drain() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// What a delivery takes of its consumer's budget: its cost, at most the whole budget (a
/// delivery larger than the budget is buffered alone).
fn charge_of(delivery: &WireDelivery, budget: usize) -> u32 {
    let cost = delivery_cost(delivery).clamp(1, budget.max(1));
    u32::try_from(cost).unwrap_or(u32::MAX)
}
