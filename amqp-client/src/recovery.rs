//! Recovery: what a lost connection fails or keeps, and how a new one is restored.
//!
//! ```text
//!  lost ──► requests fail; unconfirmed publishes fail with OutcomeUnknown (or are kept to
//!  │        publish again); delivery tags of the old connection become void (the
//!  │        tags the application sees go on growing from the highest it was handed)
//!  ▼
//!  Connected ──► Opening: every channel again on its number, with its qos/confirm/tx,
//!                and one more channel for the topology
//!           ──► Declaring: exchanges and queues (a server-named queue gets a new name)
//!           ──► Binding: exchange and queue bindings, with the queues' new names
//!           ──► Consuming: consumers under their tags; kept publishes sent again
//!           ──► Recovered: commands flow again
//! ```
//! Each step waits for every reply of the one before. Handles' commands wait meanwhile.

use std::collections::{HashMap, HashSet};

use amqp_wire::connection::{CloseReason, Connection as Engine, Initiator, RequestId};
use amqp_wire::{ChannelId, Method, ReplyCode};

use crate::config::Endpoint;
use crate::connection::ConnectionEvent;
use crate::error::Error;
use crate::publish::Confirmation;
use crate::router::Router;
use crate::topology::consume_again;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Opening,
    Declaring,
    Binding,
    Consuming,
}

/// What a replay request restores.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The declaration at this index of `Topology::declarations`.
    Declare(usize),
    Bind,
    Setting,
    Consume,
}

/// A recovery in progress.
#[derive(Debug)]
pub(crate) struct Replay {
    phase: Phase,
    /// Channels being opened again (and the topology channel).
    opening: HashSet<ChannelId>,
    /// Requests awaiting their reply, with their channel.
    waiting: HashMap<RequestId, (ChannelId, Step)>,
    /// Where exchanges, queues and bindings are declared.
    topology_channel: Option<ChannelId>,
}

impl Replay {
    fn send(&mut self, engine: &mut Engine, channel: ChannelId, method: Method, step: Step) {
        let name = method.name();
        match engine.channel(channel).and_then(|mut ch| ch.call(method)) {
            Ok(Some(request)) => {
                self.waiting.insert(request, (channel, step));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(channel = channel.0, method = name, error = %e, "recovery step not sent")
            }
        }
    }
}

impl Router {
    /// A connection attempt starts.
    pub(crate) fn reconnecting(&self, round: u32, endpoint: &Endpoint) {
        if self.ever_connected() {
            tracing::info!(round, host = %endpoint.host, port = endpoint.port, "reconnecting");
            self.emit(ConnectionEvent::Reconnecting {
                round,
                endpoint: endpoint.clone(),
            });
        }
    }

    /// A socket is up (the handshake follows).
    pub(crate) fn session_started(&mut self, endpoint: Endpoint) {
        if let Ok(mut session) = self.conn.session.lock() {
            session.endpoint = Some(endpoint);
        }
    }

    /// A connection that was up is lost: fail what cannot survive it, keep the rest for the
    /// replay.
    pub(crate) fn lost(&mut self, error: &Error) {
        tracing::warn!(%error, "connection lost");
        self.session_open = false;
        self.replay = None;
        self.parked = None;
        self.blocked.send_replace(false);
        self.emit(ConnectionEvent::Disconnected {
            error: error.clone(),
        });
        self.fail_in_flight(error);
        let mut closed = Vec::new();
        for route in self.routes.iter_mut() {
            route.void_tags();
            if !route.closing.is_empty() {
                // The application was closing it: it is closed now.
                closed.push(route.shared.id);
            }
        }
        for route in closed.into_iter().filter_map(|id| self.routes.take(id)) {
            let reason = CloseReason {
                code: ReplyCode::SUCCESS,
                text: amqp_wire::ShortStr::from_static("closed with the connection"),
                class_id: 0,
                method_id: 0,
                initiator: Initiator::Local,
            };
            route.end(&Error::ChannelClosed(reason), true);
        }
    }

    /// The session is ending (the engine said so; its socket may still be flushing a close):
    /// what waits on its replies fails now, with the cause, instead of after a close-ok wait
    /// or a recovery. Unconfirmed publishes resolve `OutcomeUnknown`, or are kept to publish
    /// again.
    pub(crate) fn fail_in_flight(&mut self, error: &Error) {
        self.fail_waiting(error);
        for route in self.routes.iter_mut() {
            for (_, pending) in route.requests.drain() {
                let _ = pending.reply.send(Err(error.clone()));
            }
            for (_, confirm) in route.confirms.drain(..) {
                if confirm.message.is_some() {
                    route.republish.push_back(confirm);
                } else {
                    let _ = confirm.tx.send(Err(Error::OutcomeUnknown));
                }
            }
        }
    }

    /// Recovery is off or gave up: the connection is closed for good.
    pub(crate) fn give_up(&mut self, error: Error) {
        if self.ever_connected() {
            self.emit(ConnectionEvent::Failed {
                error: error.clone(),
            });
        }
        self.connection_closed(error);
    }

    /// The handshake of a new session completed: open every channel again.
    pub(crate) fn start_replay(&mut self, engine: &mut Engine) {
        let mut replay = Replay {
            phase: Phase::Opening,
            opening: HashSet::new(),
            waiting: HashMap::new(),
            topology_channel: None,
        };
        let mut refused = Vec::new();
        for route in self.routes.iter() {
            let id = route.shared.id;
            match engine.open_channel_at(id) {
                Ok(()) => {
                    replay.opening.insert(id);
                }
                Err(e) => refused.push((id, e)),
            }
        }
        if !self.topology.declarations().is_empty() {
            match engine.open_channel() {
                Ok(id) => {
                    replay.opening.insert(id);
                    replay.topology_channel = Some(id);
                }
                Err(e) => tracing::warn!(error = %e, "no channel to restore the topology on"),
            }
        }
        self.replay = Some(replay);
        for (id, e) in refused {
            tracing::warn!(channel = id.0, error = %e, "channel cannot be reopened");
            self.channel_closed(
                id,
                CloseReason {
                    code: ReplyCode::CHANNEL_ERROR,
                    text: amqp_wire::ShortStr::from_static(
                        "channel could not be reopened after a reconnection",
                    ),
                    class_id: 0,
                    method_id: 0,
                    initiator: Initiator::Library,
                },
            );
        }
        self.advance(engine);
    }

    /// A channel of the replay is open: a recovered one gets its settings again.
    pub(crate) fn replay_opened(&mut self, id: ChannelId, engine: &mut Engine) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        replay.opening.remove(&id);
        if replay.topology_channel != Some(id) {
            let settings = self
                .routes
                .get(id)
                .map(|r| r.settings.clone())
                .unwrap_or_default();
            for method in settings {
                replay.send(engine, id, method, Step::Setting);
            }
        }
        self.advance(engine);
    }

    pub(crate) fn is_replay_request(&self, request: RequestId) -> bool {
        self.replay
            .as_ref()
            .is_some_and(|r| r.waiting.contains_key(&request))
    }

    pub(crate) fn replay_reply(
        &mut self,
        _channel: ChannelId,
        request: RequestId,
        method: Method,
        engine: &mut Engine,
    ) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        let step = replay.waiting.remove(&request).map(|(_, step)| step);
        if let (Some(Step::Declare(i)), Method::QueueDeclareOk(ok)) = (step, &method) {
            let exchanges = self.topology.exchange_count();
            if let Some(old) = i
                .checked_sub(exchanges)
                .and_then(|q| self.topology.renamed(q, ok.queue.clone()))
            {
                tracing::info!(%old, new = %ok.queue, "server-named queue renamed by the recovery");
                for route in self.routes.iter_mut() {
                    for spec in route.consumer_specs.values_mut() {
                        if spec.queue == old {
                            spec.queue = ok.queue.clone();
                        }
                    }
                }
                self.emit(ConnectionEvent::QueueRenamed {
                    old,
                    new: ok.queue.clone(),
                });
            }
        }
        self.advance(engine);
    }

    /// A channel closed during the replay: the topology channel (a declaration failed), or a
    /// recovered channel (its consumer's queue is gone, say).
    pub(crate) fn replay_channel_closed(
        &mut self,
        channel: ChannelId,
        reason: CloseReason,
        engine: &mut Engine,
    ) {
        if let Some(replay) = self.replay.as_mut() {
            replay.waiting.retain(|_, (ch, _)| *ch != channel);
            replay.opening.remove(&channel);
            if replay.topology_channel == Some(channel) {
                replay.topology_channel = None;
                tracing::warn!(%reason, "topology recovery failed");
                self.emit(ConnectionEvent::TopologyRecoveryFailed {
                    error: Error::ChannelClosed(reason),
                });
                return self.advance(engine);
            }
        }
        self.channel_closed(channel, reason);
        self.advance(engine);
    }

    /// Moves the replay on when its current step has every reply.
    fn advance(&mut self, engine: &mut Engine) {
        loop {
            let Some(replay) = self.replay.as_mut() else {
                return;
            };
            if !replay.opening.is_empty() || !replay.waiting.is_empty() {
                return;
            }
            match replay.phase {
                Phase::Opening => {
                    replay.phase = Phase::Declaring;
                    if let Some(ch) = replay.topology_channel {
                        for (i, method) in self.topology.declarations().into_iter().enumerate() {
                            replay.send(engine, ch, method, Step::Declare(i));
                        }
                    }
                }
                Phase::Declaring => {
                    replay.phase = Phase::Binding;
                    if let Some(ch) = replay.topology_channel {
                        for method in self.topology.bindings() {
                            replay.send(engine, ch, method, Step::Bind);
                        }
                    }
                }
                Phase::Binding => {
                    replay.phase = Phase::Consuming;
                    for route in self.routes.iter_mut() {
                        let id = route.shared.id;
                        for (tag, spec) in &route.consumer_specs {
                            replay.send(
                                engine,
                                id,
                                consume_again(spec, tag, &spec.queue).into(),
                                Step::Consume,
                            );
                        }
                        while let Some(slot) = route.republish.pop_front() {
                            let Some(message) = slot.message.as_deref().cloned() else {
                                continue;
                            };
                            let (publish, properties, body) = message;
                            match engine
                                .channel(id)
                                .and_then(|mut ch| ch.basic_publish(publish, &properties, body))
                            {
                                Ok(Some(tag)) => route.confirms.push_back((tag, slot)),
                                Ok(None) => drop(slot.tx.send(Ok(Confirmation::NotRequested))),
                                Err(_) => drop(slot.tx.send(Err(Error::OutcomeUnknown))),
                            }
                        }
                    }
                }
                Phase::Consuming => {
                    if let Some(ch) = replay.topology_channel {
                        let _ = engine
                            .channel(ch)
                            .and_then(|mut c| c.close(ReplyCode::SUCCESS, "topology restored"));
                    }
                    self.replay = None;
                    let endpoint = self
                        .conn
                        .session
                        .lock()
                        .ok()
                        .and_then(|s| s.endpoint.clone())
                        .unwrap_or_default();
                    tracing::info!(host = %endpoint.host, port = endpoint.port, "connection recovered");
                    self.emit(ConnectionEvent::Recovered { endpoint });
                    return;
                }
            }
        }
    }
}
