//! The driver's bookkeeping: which handle waits for which reply, confirm and delivery.
//!
//! Commands go into the engine here ([`Router::apply`]) and the engine's events come out to
//! their waiters ([`Router::route`]). Nothing the application handed over is dropped in
//! silence: every pending reply, confirm and consumer gets the channel's or connection's
//! error when it ends, and a delivery nobody will read goes back to the broker.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use amqp_wire::connection::{
    CloseReason, Confirmation as WireConfirmation, Connection as Engine, ConnectionError,
    Delivery as WireDelivery, Event, Initiator, RequestId, UsageError,
};
use amqp_wire::methods::{BasicCancel, BasicConsume};
use amqp_wire::{ChannelId, DeliveryTag, Method, ReplyCode, ShortStr};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};

use crate::channel::{ChannelShared, Confirmation};
use crate::command::{Command, ConfirmSlot, ConsumerSink, Reply, Settle};
use crate::connection::{ConnShared, ConnectionEvent, is_local_close};
use crate::consumer::{ConsumerItem, Delivery};
use crate::error::{Error, Result};
use crate::recovery::Replay;
use crate::topology::{self, Topology};

/// A delivery waiting for room in its consumer's full buffer; the socket is not read
/// meanwhile.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) tx: mpsc::Sender<ConsumerItem>,
    item: Delivery,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) reply: oneshot::Sender<Result<Reply>>,
    pub(crate) consumer: Option<ConsumerSink>,
    /// The request, kept when its reply changes what a recovery must restore.
    pub(crate) request: Option<Method>,
}

/// What waits on one open channel, and what a recovery must restore on it.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) shared: Arc<ChannelShared>,
    pub(crate) requests: HashMap<RequestId, Pending>,
    /// Ascending by tag, as publishes were numbered.
    pub(crate) confirms: VecDeque<(DeliveryTag, ConfirmSlot)>,
    pub(crate) consumers: HashMap<ShortStr, ConsumerSink>,
    pub(crate) returns: Option<mpsc::Sender<amqp_wire::connection::Returned>>,
    pub(crate) closing: Vec<oneshot::Sender<Result<()>>>,
    /// The channel's settings, in the order they were made: qos, confirm.select, tx.select.
    pub(crate) settings: Vec<Method>,
    /// Each consumer's `basic.consume`, under the tag the broker confirmed.
    pub(crate) consumer_specs: HashMap<ShortStr, BasicConsume>,
    /// Unconfirmed publishes kept across a loss, to publish again.
    pub(crate) republish: VecDeque<ConfirmSlot>,
}

impl Route {
    fn new(shared: Arc<ChannelShared>) -> Self {
        Self {
            shared,
            requests: HashMap::new(),
            confirms: VecDeque::new(),
            consumers: HashMap::new(),
            returns: None,
            closing: Vec::new(),
            settings: Vec::new(),
            consumer_specs: HashMap::new(),
            republish: VecDeque::new(),
        }
    }

    /// Keeps what a confirmed request set on the channel, for a recovery to set it again.
    fn remember(&mut self, request: &Method, reply: &Method) {
        match (request, reply) {
            (Method::BasicQos(qos), _) => {
                self.settings
                    .retain(|m| !matches!(m, Method::BasicQos(q) if q.global == qos.global));
                self.settings.push(request.clone());
            }
            (Method::ConfirmSelect(_) | Method::TxSelect(_), _)
                if !self.settings.contains(request) =>
            {
                self.settings.push(request.clone());
            }
            (Method::BasicConsume(spec), Method::BasicConsumeOk(ok)) => {
                self.consumer_specs
                    .insert(ok.consumer_tag.clone(), spec.clone());
            }
            (Method::BasicCancel(_), Method::BasicCancelOk(ok)) => {
                self.consumer_specs.remove(&ok.consumer_tag);
            }
            _ => {}
        }
    }

    /// Fails everything waiting on the channel with `error`; a clean close ends consumers
    /// without an error.
    pub(crate) fn end(self, error: &Error, clean: bool) {
        let _ = self.shared.closed.set(error.clone());
        for (_, pending) in self.requests {
            let _ = pending.reply.send(Err(error.clone()));
        }
        for (_, slot) in self
            .confirms
            .into_iter()
            .chain(self.republish.into_iter().map(|s| (DeliveryTag(0), s)))
        {
            let _ = slot.tx.send(Err(error.clone()));
        }
        for (_, sink) in self.consumers {
            if !clean {
                if let Ok(mut end) = sink.end.lock() {
                    *end = Some(error.clone());
                }
            }
        }
        for reply in self.closing {
            let _ = reply.send(if clean { Ok(()) } else { Err(error.clone()) });
        }
    }
}

#[derive(Debug)]
pub(crate) struct Router {
    pub(crate) conn: Arc<ConnShared>,
    /// Weak, so that the driver notices when the application dropped every handle.
    tx: mpsc::WeakSender<Command>,
    pub(crate) blocked: watch::Sender<bool>,
    ready: Option<oneshot::Sender<Result<()>>>,
    pub(crate) routes: Vec<Option<Route>>,
    opening: HashMap<ChannelId, oneshot::Sender<Result<Arc<ChannelShared>>>>,
    secrets: HashMap<RequestId, oneshot::Sender<Result<Reply>>>,
    closing: Vec<oneshot::Sender<Result<()>>>,
    generation: u64,
    pub(crate) parked: Option<Parked>,
    /// What was declared through this connection.
    pub(crate) topology: Topology,
    /// A recovery in progress.
    pub(crate) replay: Option<Replay>,
    /// The handshake of the current session completed.
    pub(crate) session_open: bool,
    /// Some session completed its handshake: later losses are recovered.
    pub(crate) ever_connected: bool,
    /// The application closed the connection (or dropped every handle).
    app_closed: bool,
    commands_closed: bool,
    /// Confirm-window places freed by the confirms routed since the last
    /// [`Router::release_windows`], merged per window: giving a place back locks the window's
    /// semaphore and may wake a publisher, once per batch instead of once per message.
    released: Vec<OwnedSemaphorePermit>,
}

impl Router {
    pub(crate) fn new(
        conn: Arc<ConnShared>,
        tx: mpsc::WeakSender<Command>,
        blocked: watch::Sender<bool>,
        ready: oneshot::Sender<Result<()>>,
    ) -> Self {
        Self {
            conn,
            tx,
            blocked,
            ready: Some(ready),
            routes: Vec::new(),
            opening: HashMap::new(),
            secrets: HashMap::new(),
            closing: Vec::new(),
            generation: 0,
            parked: None,
            released: Vec::new(),
            topology: Topology::default(),
            replay: None,
            session_open: false,
            ever_connected: false,
            app_closed: false,
            commands_closed: false,
        }
    }

    pub(crate) fn ever_connected(&self) -> bool {
        self.ever_connected
    }

    pub(crate) fn session_was_open(&self) -> bool {
        self.session_open
    }

    pub(crate) fn app_closed(&self) -> bool {
        self.app_closed
    }

    pub(crate) fn commands_closed(&self) -> bool {
        self.commands_closed
    }

    /// Every handle is gone: the connection closes and is not recovered.
    pub(crate) fn handles_dropped(&mut self) {
        self.commands_closed = true;
        self.app_closed = true;
    }

    /// Commands wait while a session is not open or is being restored.
    pub(crate) fn accepts_commands(&self) -> bool {
        self.session_open && self.replay.is_none()
    }

    /// Sends an event to whoever listens (nobody, often).
    pub(crate) fn emit(&self, event: ConnectionEvent) {
        let _ = self.conn.events.send(event);
    }

    fn route_mut(&mut self, channel: ChannelId, generation: u64) -> Option<&mut Route> {
        self.routes
            .get_mut(usize::from(channel.0))
            .and_then(Option::as_mut)
            .filter(|r| r.shared.generation == generation)
    }

    /// The error for a command the engine refused.
    fn refused(&self, e: UsageError) -> Error {
        match e {
            UsageError::ChannelClosed { reason, .. } => Error::ChannelClosed(reason),
            UsageError::ConnectionNotOpen => self.conn.gone(),
            other => Error::Usage(other),
        }
    }

    // ----- commands -----

    pub(crate) fn apply(&mut self, command: Command, engine: &mut Engine) {
        match command {
            Command::OpenChannel { reply } => match engine.open_channel() {
                Ok(id) => {
                    self.opening.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(self.refused(e)));
                }
            },
            Command::Call {
                channel,
                generation,
                method,
                reply,
                consumer,
            } => {
                self.call(engine, channel, generation, method, reply, consumer);
            }
            Command::Publish {
                channel,
                generation,
                publish,
                properties,
                body,
                slot,
            } => {
                let Some(route) = self.route_mut(channel, generation) else {
                    let _ = slot
                        .tx
                        .send(Err(UsageError::ChannelNotOpen(channel).into()));
                    return;
                };
                match engine
                    .channel(channel)
                    .and_then(|mut ch| ch.basic_publish(publish, &properties, body))
                {
                    Ok(Some(tag)) => route.confirms.push_back((tag, slot)),
                    Ok(None) => {
                        let _ = slot.tx.send(Ok(Confirmation::NotRequested));
                    }
                    Err(e) => {
                        let _ = slot.tx.send(Err(self.refused(e)));
                    }
                }
            }
            Command::Settle {
                channel,
                generation,
                epoch,
                tag,
                how,
                reply,
            } => {
                let current = self
                    .route_mut(channel, generation)
                    .map(|r| r.shared.epoch.load(Ordering::Acquire));
                if current != Some(epoch) {
                    tracing::warn!(
                        channel = channel.0,
                        tag = tag.0,
                        "settle for a closed or recovered channel; the broker requeued it"
                    );
                    // A closed channel's waiter reports the channel's error when `reply` drops.
                    if let (Some(reply), Some(_)) = (reply, current) {
                        let _ = reply.send(Err(Error::StaleDelivery(tag.0)));
                    }
                    return;
                }
                let result = settle(engine, channel, tag, how);
                if let Err(e) = &result {
                    tracing::warn!(channel = channel.0, tag = tag.0, error = %e, "settle refused");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result.map_err(|e| self.refused(e)));
                }
            }
            Command::ListenReturns {
                channel,
                generation,
                tx,
            } => {
                if let Some(route) = self.route_mut(channel, generation) {
                    route.returns = Some(tx);
                }
            }
            Command::CloseChannel {
                channel,
                generation,
                code,
                text,
                reply,
            } => {
                let Some(route) = self.route_mut(channel, generation) else {
                    let _ = reply.send(Ok(()));
                    return;
                };
                route.closing.push(reply);
                if let Err(e) = engine
                    .channel(channel)
                    .and_then(|mut ch| ch.close(code, &text))
                {
                    tracing::debug!(channel = channel.0, error = %e, "channel already closing");
                }
                // Closing, the channel drops its deliveries and the broker requeues them.
                self.release_parked(engine, |d| d.channel_id() == channel);
            }
            Command::Close { code, text, reply } => {
                if engine.is_closed() && self.conn.closed.get().is_some() {
                    let result = self
                        .conn
                        .closed
                        .get()
                        .filter(|e| !is_local_close(e))
                        .cloned();
                    let _ = reply.send(result.map_or(Ok(()), Err));
                    return;
                }
                self.closing.push(reply);
                self.app_closed = true;
                engine.close(code, &text);
            }
            Command::UpdateSecret {
                secret,
                reason,
                reply,
            } => match engine.update_secret(secret, &reason) {
                Ok(request) => {
                    self.secrets.insert(request, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(self.refused(e)));
                }
            },
        }
    }

    fn call(
        &mut self,
        engine: &mut Engine,
        channel: ChannelId,
        generation: u64,
        method: Method,
        reply: oneshot::Sender<Result<Reply>>,
        consumer: Option<ConsumerSink>,
    ) {
        let nowait_tag = match &method {
            Method::BasicConsume(m) if m.no_wait => Some(m.consumer_tag.clone()),
            _ => None,
        };
        let cancel_tag = match &method {
            Method::BasicCancel(m) => Some(m.consumer_tag.clone()),
            _ => None,
        };
        if self.route_mut(channel, generation).is_none() {
            let _ = reply.send(Err(UsageError::ChannelNotOpen(channel).into()));
            return;
        }
        let kept = recorded(&method).then(|| method.clone());
        let sent = engine
            .channel(channel)
            .and_then(|mut ch| ch.call(method))
            .map_err(|e| self.refused(e));
        let Some(route) = self.route_mut(channel, generation) else {
            return;
        };
        match sent {
            Ok(Some(request)) => {
                route.requests.insert(
                    request,
                    Pending {
                        reply,
                        consumer,
                        request: kept,
                    },
                );
            }
            Ok(None) => {
                if let (Some(tag), Some(sink)) = (nowait_tag, consumer) {
                    route.consumers.insert(tag, sink);
                }
                let _ = reply.send(Ok(Reply::Sent));
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
        if let Some(tag) = cancel_tag {
            if let Some(sink) = route.consumers.get_mut(&tag) {
                sink.cancelling = true;
            }
            self.release_parked(engine, |d| {
                d.channel_id() == channel && d.consumer_tag == tag
            });
        }
    }

    /// Gives the parked delivery back to the broker when `unread` says nobody will read it
    /// (its consumer is being cancelled, its channel closed), so that the socket is read
    /// again and the cancel-ok or close-ok can arrive.
    fn release_parked(&mut self, engine: &mut Engine, unread: impl Fn(&Delivery) -> bool) {
        if let Some(parked) = self.parked.take_if(|p| unread(&p.item)) {
            let item = &parked.item;
            give_back(
                engine,
                item.channel_id(),
                item.delivery_tag,
                &item.properties,
            );
        }
    }

    // ----- events -----

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
                let route = self
                    .routes
                    .get_mut(usize::from(channel.0))
                    .and_then(Option::as_mut);
                let sink = route.and_then(|r| {
                    r.consumer_specs.remove(&consumer_tag);
                    r.consumers.remove(&consumer_tag)
                });
                if let Some(sink) = sink {
                    if let Ok(mut end) = sink.end.lock() {
                        *end = Some(Error::ConsumerCancelled(consumer_tag.to_string()));
                    }
                }
            }
            Event::Returned { channel, message } => {
                let listener = self
                    .routes
                    .get(usize::from(channel.0))
                    .and_then(Option::as_ref)
                    .and_then(|r| r.returns.as_ref());
                let delivered = match listener {
                    Some(tx) => tx.try_send(*message).is_ok(),
                    None => false,
                };
                if !delivered {
                    tracing::warn!(
                        channel = channel.0,
                        "a returned message had no listener with room; dropped"
                    );
                }
            }
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
            // The driver decides what follows: recovery, or the end.
            Event::Closed(error) => tracing::debug!(%error, "session closed"),
            other => tracing::debug!(event = ?other, "event not routed"),
        }
    }

    fn opened(&mut self, id: ChannelId, engine: &mut Engine) {
        self.generation += 1;
        let shared = Arc::new(ChannelShared::new(id, self.generation, self.conn.clone()));
        let slot = usize::from(id.0);
        if self.routes.len() <= slot {
            self.routes.resize_with(slot + 1, || None);
        }
        self.routes[slot] = Some(Route::new(shared.clone()));
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

    fn reply(&mut self, channel: ChannelId, request: RequestId, method: Method) {
        let Some(route) = self
            .routes
            .get_mut(usize::from(channel.0))
            .and_then(Option::as_mut)
        else {
            return;
        };
        let Some(pending) = route.requests.remove(&request) else {
            return;
        };
        if let Some(request) = &pending.request {
            self.topology.record(request, &method);
            route.remember(request, &method);
        }
        match &method {
            Method::BasicConsumeOk(ok) => {
                if let Some(sink) = pending.consumer {
                    route.consumers.insert(ok.consumer_tag.clone(), sink);
                }
            }
            // The consumer's sink is dropped: its stream ends cleanly.
            Method::BasicCancelOk(ok) => drop(route.consumers.remove(&ok.consumer_tag)),
            _ => {}
        }
        let _ = pending.reply.send(Ok(Reply::Method(method)));
    }

    fn got(
        &mut self,
        channel: ChannelId,
        request: RequestId,
        message: Option<(WireDelivery, u32)>,
        engine: &mut Engine,
    ) {
        let pending = self
            .routes
            .get_mut(usize::from(channel.0))
            .and_then(Option::as_mut)
            .and_then(|r| r.requests.remove(&request));
        let tag = message.as_ref().map(|(d, _)| d.delivery_tag);
        let delivered =
            pending.is_some_and(|p| p.reply.send(Ok(Reply::Get(message.map(Box::new)))).is_ok());
        if let (false, Some(tag)) = (delivered, tag) {
            // The caller stopped waiting: hand the message back instead of losing it.
            requeue(engine, channel, tag);
        }
    }

    fn deliver(&mut self, channel: ChannelId, delivery: WireDelivery, engine: &mut Engine) {
        let tx = self.tx.upgrade();
        let Some(route) = self
            .routes
            .get_mut(usize::from(channel.0))
            .and_then(Option::as_mut)
        else {
            return;
        };
        let tag = delivery.delivery_tag;
        let how = Settle::give_back(&delivery.properties);
        let (Some(sink), Some(tx)) = (route.consumers.get(&delivery.consumer_tag), tx) else {
            tracing::debug!(
                channel = channel.0,
                tag = tag.0,
                "delivery for no consumer; requeued"
            );
            settle_quietly(engine, channel, tag, how);
            return;
        };
        let consumer_tag = delivery.consumer_tag.clone();
        let offset = topology::stream_offset(&delivery.properties);
        let item = Delivery::new(delivery, tx, route.shared.clone(), sink.no_ack);
        match sink.tx.try_send(item) {
            Ok(()) => {
                // The application will read it: a recovery resumes the stream after it.
                if let (Some(offset), Some(spec)) =
                    (offset, route.consumer_specs.get_mut(&consumer_tag))
                {
                    topology::advance_stream_offset(spec, offset);
                }
            }
            // Nobody may read it: a cancelled consumer, a closing channel (which drops it).
            Err(TrySendError::Full(_)) if sink.cancelling || engine.channel(channel).is_err() => {
                settle_quietly(engine, channel, tag, how);
            }
            Err(TrySendError::Full(item)) => {
                self.parked = Some(Parked {
                    tx: sink.tx.clone(),
                    item,
                })
            }
            Err(TrySendError::Closed(_)) => {
                // The consumer was dropped: requeue, and cancel it at the broker.
                route.consumers.remove(&consumer_tag);
                settle_quietly(engine, channel, tag, how);
                let cancel = BasicCancel {
                    consumer_tag,
                    no_wait: false,
                };
                let _ = engine.channel(channel).and_then(|mut ch| ch.call(cancel));
            }
        }
    }

    /// The parked delivery's consumer has room (or is gone).
    pub(crate) fn unpark(
        &mut self,
        permit: std::result::Result<mpsc::OwnedPermit<ConsumerItem>, mpsc::error::SendError<()>>,
        engine: &mut Engine,
    ) {
        let Some(parked) = self.parked.take() else {
            return;
        };
        match permit {
            Ok(permit) => {
                let item = &parked.item;
                let spec = self
                    .routes
                    .get_mut(usize::from(item.channel_id().0))
                    .and_then(Option::as_mut)
                    .and_then(|route| route.consumer_specs.get_mut(&item.consumer_tag));
                if let (Some(offset), Some(spec)) =
                    (topology::stream_offset(&item.properties), spec)
                {
                    topology::advance_stream_offset(spec, offset);
                }
                drop(permit.send(parked.item));
            }
            Err(_) => {
                let item = &parked.item;
                give_back(
                    engine,
                    item.channel_id(),
                    item.delivery_tag,
                    &item.properties,
                );
            }
        }
    }

    fn confirmed(&mut self, channel: ChannelId, tag: DeliveryTag, outcome: WireConfirmation) {
        let Some(route) = self
            .routes
            .get_mut(usize::from(channel.0))
            .and_then(Option::as_mut)
        else {
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
    fn release_later(&mut self, permit: OwnedSemaphorePermit) {
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
        if let Some(route) = self
            .routes
            .get_mut(usize::from(channel.0))
            .and_then(Option::take)
        {
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
        for route in self.routes.drain(..).flatten() {
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

    /// A command that arrived after the end.
    pub(crate) fn refuse(&self, command: Command) {
        let error = self.conn.gone();
        match command {
            Command::OpenChannel { reply } => drop(reply.send(Err(error))),
            Command::Call { reply, .. } | Command::UpdateSecret { reply, .. } => {
                drop(reply.send(Err(error)))
            }
            Command::Publish { slot, .. } => drop(slot.tx.send(Err(error))),
            Command::CloseChannel { reply, .. } | Command::Close { reply, .. } => {
                let _ = reply.send(if is_local_close(&error) {
                    Ok(())
                } else {
                    Err(error)
                });
            }
            Command::Settle { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
            Command::ListenReturns { .. } => {}
        }
    }
}

/// Whether a request's method must be kept until its reply, for recovery to restore it.
fn recorded(method: &Method) -> bool {
    Topology::is_recorded(method)
        || matches!(
            method,
            Method::BasicQos(_)
                | Method::ConfirmSelect(_)
                | Method::TxSelect(_)
                | Method::BasicConsume(_)
                | Method::BasicCancel(_)
        )
}

/// Sends an ack, nack or reject through the engine.
pub(crate) fn settle(
    engine: &mut Engine,
    channel: ChannelId,
    tag: DeliveryTag,
    how: Settle,
) -> std::result::Result<(), UsageError> {
    let mut ch = engine.channel(channel)?;
    match how {
        Settle::Ack { multiple } => ch.basic_ack(tag, multiple),
        Settle::Nack { multiple, requeue } => ch.basic_nack(tag, multiple, requeue),
        Settle::Reject { requeue } => ch.basic_reject(tag, requeue),
    }
}

/// Gives an unread delivery back to the broker. One consumed without acks cannot be (the
/// engine knows no such tag), and a closed channel's deliveries the broker requeues itself.
pub(crate) fn requeue(engine: &mut Engine, channel: ChannelId, tag: DeliveryTag) {
    settle_quietly(
        engine,
        channel,
        tag,
        Settle::Nack {
            multiple: false,
            requeue: true,
        },
    );
}

/// [`requeue`] for a consumer's delivery, which may come from a stream
/// ([`Settle::give_back`]).
fn give_back(
    engine: &mut Engine,
    channel: ChannelId,
    tag: DeliveryTag,
    properties: &amqp_wire::BasicProperties,
) {
    settle_quietly(engine, channel, tag, Settle::give_back(properties));
}

/// Settles a delivery nobody will read; a refusal (consumed without acks, channel closing)
/// only means there is nothing to give back.
fn settle_quietly(engine: &mut Engine, channel: ChannelId, tag: DeliveryTag, how: Settle) {
    if let Err(e) = settle(engine, channel, tag, how) {
        tracing::debug!(channel = channel.0, tag = tag.0, error = %e, "could not requeue");
    }
}
