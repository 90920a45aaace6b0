//! The driver's bookkeeping: which handle waits for which reply, confirm and delivery.
//!
//! Commands go into the engine here ([`Router::apply`]) and the engine's events come out to
//! their waiters ([`Router::route`]). Nothing the application handed over is dropped in
//! silence: every pending reply, confirm and consumer gets the channel's or connection's
//! error when it ends, and a delivery nobody will read goes back to the broker.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use amqp_wire::connection::{Connection as Engine, RequestId, UsageError};
use amqp_wire::methods::BasicConsume;
use amqp_wire::{ChannelId, DeliveryTag, Method, ShortStr};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::channel::ChannelShared;
use crate::command::{Command, ConfirmSlot, ConsumerSink, Reply, Settle};
use crate::connection::{ConnShared, ConnectionEvent, is_local_close};
use crate::consumer::{ConsumerItem, Delivery};
use crate::error::{Error, Result};
use crate::publish::Confirmation;
use crate::recovery::Replay;
use crate::topology::Topology;

/// A delivery waiting for room in its consumer's full buffer (a place, or octets of its
/// budget); the socket is not read meanwhile.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) tx: mpsc::Sender<ConsumerItem>,
    pub(crate) item: Delivery,
    /// How to hand it back if nobody will read it.
    pub(crate) how: Settle,
    /// The buffer's budget, and what the delivery costs it.
    pub(crate) budget: Arc<Semaphore>,
    pub(crate) cost: u32,
    /// Its octets of the budget, once taken.
    pub(crate) charge: Option<OwnedSemaphorePermit>,
}

impl Parked {
    /// `item` finds its consumer's buffer full (or its budget spent).
    pub(crate) fn new(sink: &ConsumerSink, item: ConsumerItem, how: Settle, cost: u32) -> Self {
        Self {
            tx: sink.tx.clone(),
            item: item.delivery,
            how,
            budget: sink.budget.clone(),
            cost,
            charge: item.charge,
        }
    }
}

/// Room for a parked delivery: a place in its consumer's buffer, and its octets of the
/// budget if it had to wait for them.
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) place: mpsc::OwnedPermit<ConsumerItem>,
    pub(crate) charge: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) reply: oneshot::Sender<Result<Reply>>,
    pub(crate) consumer: Option<ConsumerSink>,
    /// The request, kept when its reply changes what a recovery must restore.
    pub(crate) request: Option<Method>,
}

/// How many ended stream consumers a channel remembers (see `Route::ended_streams`).
const ENDED_STREAMS_KEPT: usize = 64;

/// The routes of the open channels, by channel number.
#[derive(Debug, Default)]
pub(crate) struct Routes(Vec<Option<Route>>);

impl Routes {
    pub(crate) fn get(&self, channel: ChannelId) -> Option<&Route> {
        self.0.get(usize::from(channel.0)).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, channel: ChannelId) -> Option<&mut Route> {
        self.0
            .get_mut(usize::from(channel.0))
            .and_then(Option::as_mut)
    }

    /// Sets the route of `channel`, replacing any it had.
    pub(crate) fn insert(&mut self, channel: ChannelId, route: Route) {
        let slot = usize::from(channel.0);
        if self.0.len() <= slot {
            self.0.resize_with(slot + 1, || None);
        }
        self.0[slot] = Some(route);
    }

    /// Removes the route of `channel` and returns it.
    pub(crate) fn take(&mut self, channel: ChannelId) -> Option<Route> {
        self.0
            .get_mut(usize::from(channel.0))
            .and_then(Option::take)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Route> {
        self.0.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Route> {
        self.0.iter_mut().flatten()
    }

    /// Removes every route.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Route> + '_ {
        self.0.drain(..).flatten()
    }
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
    /// The highest delivery tag handed to the application, as it knows it: the next
    /// session's tags start above it (`ChannelShared::tag_base`).
    pub(crate) highest_tag: u64,
    /// The tags of the last stream consumers that ended, newest last: a stream goes on
    /// delivering to a consumer a moment after its cancel-ok, and those deliveries go back
    /// with an ack, as the consumer's would.
    pub(crate) ended_streams: VecDeque<ShortStr>,
}

impl Route {
    pub(crate) fn new(shared: Arc<ChannelShared>) -> Self {
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
            highest_tag: 0,
            ended_streams: VecDeque::new(),
        }
    }

    /// Removes a consumer's sink, remembering the tag of a stream's.
    pub(crate) fn forget_consumer(&mut self, tag: &ShortStr) -> Option<ConsumerSink> {
        let sink = self.consumers.remove(tag)?;
        if sink.stream {
            if self.ended_streams.len() == ENDED_STREAMS_KEPT {
                self.ended_streams.pop_front();
            }
            self.ended_streams.push_back(tag.clone());
        }
        Some(sink)
    }

    /// A delivery (broker tag `tag`) found its consumer dropped: it goes back, and the
    /// consumer is cancelled at the broker.
    pub(crate) fn consumer_dropped(
        &mut self,
        engine: &mut Engine,
        consumer_tag: ShortStr,
        tag: DeliveryTag,
        how: Settle,
    ) {
        let channel = self.shared.id;
        self.forget_consumer(&consumer_tag);
        settle_quietly(engine, channel, tag, how);
        let cancel = amqp_wire::methods::BasicCancel {
            consumer_tag,
            no_wait: false,
        };
        let _ = engine.channel(channel).and_then(|mut ch| ch.call(cancel));
    }

    /// A stream consumer's delivery at `offset` went to the application: a recovery resumes
    /// the stream after it.
    pub(crate) fn advance_stream(&mut self, consumer_tag: &ShortStr, offset: Option<i64>) {
        if let (Some(offset), Some(spec)) = (offset, self.consumer_specs.get_mut(consumer_tag)) {
            crate::topology::advance_stream_offset(spec, offset);
        }
    }

    /// The broker's delivery tag as the application will know it.
    pub(crate) fn app_tag(&mut self, wire: DeliveryTag) -> DeliveryTag {
        let tag = wire.0 + self.shared.tag_base.load(Ordering::Acquire);
        self.highest_tag = self.highest_tag.max(tag);
        DeliveryTag(tag)
    }

    /// The broker's delivery tag for an application's one on this session, or `None` for one
    /// from a lost session (`multiple` with tag 0 means all, and stays 0).
    pub(crate) fn wire_tag(&self, tag: DeliveryTag, multiple: bool) -> Option<DeliveryTag> {
        let base = self.shared.tag_base.load(Ordering::Acquire);
        match tag.0 {
            0 if multiple => Some(tag),
            t if t > base => Some(DeliveryTag(t - base)),
            _ => None,
        }
    }

    /// The session is lost: the tags it handed out are void from now on.
    pub(crate) fn void_tags(&self) {
        self.shared
            .tag_base
            .store(self.highest_tag, Ordering::Release);
    }

    /// Keeps what a confirmed request set on the channel, for a recovery to set it again.
    pub(crate) fn remember(&mut self, request: &Method, reply: &Method) {
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
    pub(crate) tx: mpsc::WeakSender<Command>,
    pub(crate) blocked: watch::Sender<bool>,
    pub(crate) ready: Option<oneshot::Sender<Result<()>>>,
    pub(crate) routes: Routes,
    pub(crate) opening: HashMap<ChannelId, oneshot::Sender<Result<Arc<ChannelShared>>>>,
    pub(crate) secrets: HashMap<RequestId, oneshot::Sender<Result<Reply>>>,
    pub(crate) closing: Vec<oneshot::Sender<Result<()>>>,
    pub(crate) generation: u64,
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
    pub(crate) app_closed: bool,
    pub(crate) commands_closed: bool,
    /// Confirm-window places freed by the confirms routed since the last
    /// [`Router::release_windows`], merged per window: giving a place back locks the window's
    /// semaphore and may wake a publisher, once per batch instead of once per message.
    pub(crate) released: Vec<OwnedSemaphorePermit>,
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
            routes: Routes::default(),
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

    /// The application asked to close the connection (a close that must work even while
    /// the command queue does not move, the socket not draining).
    pub(crate) fn close_requested(&mut self, engine: &mut Engine) {
        if !self.app_closed {
            self.app_closed = true;
            engine.close(amqp_wire::ReplyCode::SUCCESS, "closed by the application");
        }
    }

    /// True while the broker blocks our publishes (`connection.blocked`).
    pub(crate) fn is_blocked(&self) -> bool {
        *self.blocked.borrow()
    }

    /// Commands wait while a session is not open or is being restored.
    pub(crate) fn accepts_commands(&self) -> bool {
        self.session_open && self.replay.is_none()
    }

    /// Sends an event to whoever listens (nobody, often).
    pub(crate) fn emit(&self, event: ConnectionEvent) {
        let _ = self.conn.events.send(event);
    }

    pub(crate) fn route_mut(&mut self, channel: ChannelId, generation: u64) -> Option<&mut Route> {
        self.routes
            .get_mut(channel)
            .filter(|r| r.shared.generation == generation)
    }

    /// The error for a command the engine refused.
    pub(crate) fn refused(&self, e: UsageError) -> Error {
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
                tag,
                how,
                reply,
            } => self.settle(engine, (channel, generation), tag, how, reply),
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

    /// An ack, nack or reject by the application's tag; a tag of a lost session is stale.
    fn settle(
        &mut self,
        engine: &mut Engine,
        (channel, generation): (ChannelId, u64),
        tag: DeliveryTag,
        how: Settle,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) {
        let multiple = matches!(
            how,
            Settle::Ack { multiple: true } | Settle::Nack { multiple: true, .. }
        );
        let route = self.route_mut(channel, generation);
        let open = route.is_some();
        let Some(wire) = route.and_then(|r| r.wire_tag(tag, multiple)) else {
            tracing::warn!(
                channel = channel.0,
                tag = tag.0,
                "settle for a closed or recovered channel; the broker requeued it"
            );
            // A closed channel's waiter reports the channel's error when `reply` drops.
            if let (Some(reply), true) = (reply, open) {
                let _ = reply.send(Err(Error::StaleDelivery(tag.0)));
            }
            return;
        };
        let result = settle(engine, channel, wire, how);
        if let Err(e) = &result {
            tracing::warn!(channel = channel.0, tag = tag.0, error = %e, "settle refused");
        }
        if let Some(reply) = reply {
            let _ = reply.send(result.map_err(|e| self.refused(e)));
        }
    }

    /// A `basic.consume` sent with `nowait`: its tag, and whether it consumes a stream.
    fn nowait_consumer(&self, method: &Method) -> Option<(ShortStr, bool)> {
        match method {
            Method::BasicConsume(m) if m.no_wait => {
                Some((m.consumer_tag.clone(), self.topology.consumes_stream(m)))
            }
            _ => None,
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
        let nowait_tag = self.nowait_consumer(&method);
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
                if let (Some((tag, stream)), Some(mut sink)) = (nowait_tag, consumer) {
                    sink.stream = stream;
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
    pub(crate) fn release_parked(
        &mut self,
        engine: &mut Engine,
        unread: impl Fn(&Delivery) -> bool,
    ) {
        if let Some(parked) = self.parked.take_if(|p| unread(&p.item)) {
            self.give_back(engine, &parked);
        }
    }

    /// Hands a parked delivery nobody will read back to the broker.
    pub(crate) fn give_back(&self, engine: &mut Engine, parked: &Parked) {
        let channel = parked.item.channel_id();
        let wire = self
            .routes
            .get(channel)
            .and_then(|r| r.wire_tag(parked.item.delivery_tag, false));
        if let Some(wire) = wire {
            settle_quietly(engine, channel, wire, parked.how);
        }
    }

    // ----- events -----

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
pub(crate) fn recorded(method: &Method) -> bool {
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

/// Settles a delivery nobody will read; a refusal (consumed without acks, channel closing)
/// only means there is nothing to give back.
pub(crate) fn settle_quietly(
    engine: &mut Engine,
    channel: ChannelId,
    tag: DeliveryTag,
    how: Settle,
) {
    if let Err(e) = settle(engine, channel, tag, how) {
        tracing::debug!(channel = channel.0, tag = tag.0, error = %e, "could not requeue");
    }
}
