//! What the engine does with each frame it decodes, and how it ends: the internals behind
//! [`Connection::handle_input`], [`Connection::handle_timeout`] and [`Connection::close`].

use super::*;

/// How long to wait for `close-ok` after closing a connection for the peer's protocol
/// violation.
const VIOLATION_CLOSE_WAIT: Duration = Duration::from_secs(1);

impl Connection {
    /// Acts on a frame, taking what it keeps out of it (see `handle_input` for why by
    /// reference).
    pub(super) fn handle_frame(&mut self, frame: &mut Frame) {
        match frame {
            Frame::Heartbeat => {}
            Frame::Method(ChannelId::CONNECTION, method) => {
                self.handle_connection_method(take_method(method))
            }
            Frame::Header(channel, header) => self.handle_header(*channel, header),
            _ if self.phase == Phase::Closing => {} // Only close / close-ok matter now.
            _ if self.phase != Phase::Open => self.violation(BEFORE_OPEN),
            Frame::Method(channel, method) => {
                let channel = *channel;
                let outcome = match self.channel_state(channel) {
                    Some((ch, sh)) => ch.handle_method(sh, take_method(method)),
                    None => Err(NOT_OPEN),
                };
                self.routed(channel, outcome);
            }
            Frame::Body(channel, body) => {
                let channel = *channel;
                let outcome = match self.channel_state(channel) {
                    Some((ch, sh)) => ch
                        .handle_body(sh, std::mem::take(body))
                        .map(|()| Outcome::Continue),
                    None => Err(NOT_OPEN),
                };
                self.routed(channel, outcome);
            }
        }
    }

    /// A content header frame: its properties are moved to the channel's assembler.
    fn handle_header(&mut self, channel: ChannelId, header: &mut ContentHeader) {
        match self.phase {
            Phase::Open => {}
            Phase::Closing => return, // Only close / close-ok matter now.
            _ => return self.violation(BEFORE_OPEN),
        }
        let outcome = match self.channel_state(channel) {
            Some((ch, sh)) => ch.handle_header(sh, header).map(|()| Outcome::Continue),
            None => Err(NOT_OPEN),
        };
        self.routed(channel, outcome);
    }

    /// The state of channel `id`, if it is open (or opening, or closing), and what every
    /// channel shares.
    fn channel_state(&mut self, id: ChannelId) -> Option<(&mut ChannelState, &mut Shared)> {
        match self.channels.get_mut(usize::from(id.0)) {
            Some(Some(state)) => Some((state, &mut self.shared)),
            _ => None,
        }
    }

    /// Acts on what a channel made of a frame.
    fn routed(&mut self, id: ChannelId, outcome: Result<Outcome, Violation>) {
        match outcome {
            Ok(Outcome::Continue) => {}
            Ok(Outcome::Freed) => self.channels[usize::from(id.0)] = None,
            Err(violation) => self.violation(violation),
        }
    }

    fn handle_connection_method(&mut self, method: Method) {
        match (self.phase, method) {
            (Phase::Start | Phase::Tune | Phase::OpenOk, method) => self.handshake(method),
            (Phase::Open | Phase::Closing, Method::ConnectionClose(close)) => {
                // A crossing close is answered too; the broker's reason says more than ours.
                let _ = self
                    .shared
                    .send(ChannelId::CONNECTION, ConnectionCloseOk.into());
                self.finish(ConnectionError::Closed(peer_reason(&close)));
            }
            (Phase::Closing, Method::ConnectionCloseOk(_)) => {
                let reason = self
                    .closing
                    .clone()
                    .unwrap_or_else(|| CloseReason::new(ReplyCode::SUCCESS, "", Initiator::Local));
                self.finish(ConnectionError::Closed(reason));
            }
            (Phase::Closing | Phase::Closed, _) => {}
            (Phase::Open, Method::ConnectionBlocked(blocked)) => {
                self.blocked = true;
                self.shared.events.push_back(Event::Blocked {
                    reason: blocked.reason,
                });
            }
            (Phase::Open, Method::ConnectionUnblocked(_)) => {
                self.blocked = false;
                self.shared.events.push_back(Event::Unblocked);
            }
            (Phase::Open, method @ Method::ConnectionUpdateSecretOk(_)) => {
                match self.secret_requests.pop_front() {
                    Some(request) => {
                        self.shared.events.push_back(Event::Reply {
                            channel: ChannelId::CONNECTION,
                            request,
                            method,
                        });
                    }
                    None => self.violation(unexpected_on_zero(&method)),
                }
            }
            (Phase::Open, method) => self.violation(unexpected_on_zero(&method)),
        }
    }

    /// Queues `connection.close` and waits for `close-ok`.
    pub(super) fn send_close(&mut self, reason: CloseReason) {
        let close = ConnectionClose {
            reply_code: reason.code,
            reply_text: reason.text.clone(),
            class_id: reason.class_id,
            method_id: reason.method_id,
        };
        let _ = self.shared.send(ChannelId::CONNECTION, close.into());
        self.closing = Some(reason);
        self.phase = Phase::Closing;
        self.close_deadline = Some(self.now.saturating_add(self.config.close_timeout));
    }

    /// The peer broke a rule but the stream is still in step: close politely with its code.
    pub(super) fn violation(&mut self, violation: Violation) {
        let reason = violation.reason();
        tracing::warn!(%reason, "protocol violation by the peer");
        self.set_error(ConnectionError::Protocol(reason.clone()));
        self.channels.clear();
        if self.phase != Phase::Closing {
            self.send_close(reason);
            // A peer that broke the protocol gets a short wait for its close-ok: the
            // connection is over either way, and it may never answer.
            let short = self.now.saturating_add(VIOLATION_CLOSE_WAIT);
            self.close_deadline = self.close_deadline.map(|d| d.min(short));
        }
    }

    /// The peer's bytes cannot be parsed: the stream cannot be trusted, so send the close
    /// with the right code and stop at once, without waiting for close-ok.
    pub(super) fn decode_failed(&mut self, error: DecodeError) {
        tracing::warn!(%error, "undecodable frame from the peer");
        let error = match error {
            DecodeError::ProtocolHeader(version) if self.phase == Phase::Start => {
                return self.finish(ConnectionError::UnsupportedVersion(version));
            }
            // Only an answer to our own header is a version refusal; once the broker has
            // spoken, "AMQP" is a frame of the unknown type 'A' (501).
            DecodeError::ProtocolHeader(_) => DecodeError::UnknownFrameType(b'A'),
            error => error,
        };
        // Before start nothing may be sent; while closing, our close is already on its way and
        // a connection sends one `connection.close` at most.
        if !matches!(self.phase, Phase::Start | Phase::Closing) {
            let close = ConnectionClose {
                reply_code: error.reply_code(),
                reply_text: error::truncated(&error.to_string()),
                class_id: 0,
                method_id: 0,
            };
            let _ = self.shared.send(ChannelId::CONNECTION, close.into());
        }
        self.finish(ConnectionError::Decode(error));
    }

    pub(super) fn set_error(&mut self, error: ConnectionError) {
        if self.error.is_none() {
            self.error = Some(error.clone());
            self.shared.events.push_back(Event::Closed(error));
        }
    }

    /// The connection is over.
    pub(super) fn finish(&mut self, error: ConnectionError) {
        tracing::debug!(%error, "connection closed");
        self.set_error(error);
        self.channels.clear();
        self.phase = Phase::Closed;
    }
}

pub(super) fn peer_reason(close: &ConnectionClose) -> CloseReason {
    CloseReason {
        code: close.reply_code,
        text: close.reply_text.clone(),
        class_id: close.class_id,
        method_id: close.method_id,
        initiator: Initiator::Peer,
    }
}

/// Moves a decoded method out of its frame, leaving one without arguments (and nothing to
/// drop) behind: cheaper than moving the whole frame to get at it.
fn take_method(method: &mut Method) -> Method {
    std::mem::replace(method, Method::TxSelectOk(TxSelectOk))
}

/// A channel frame before the handshake is done.
const BEFORE_OPEN: Violation = Violation::new(
    ReplyCode::CHANNEL_ERROR,
    "channel frame before the connection is open",
);

/// A frame on a channel number that is not in use.
const NOT_OPEN: Violation = Violation::new(
    ReplyCode::CHANNEL_ERROR,
    "frame on a channel that is not open",
);

/// A method the broker should not send on channel 0 now.
fn unexpected_on_zero(method: &Method) -> Violation {
    let (code, text) = match method.class_id() {
        10 => (
            ReplyCode::UNEXPECTED_FRAME,
            "connection method not expected now",
        ),
        _ => (ReplyCode::CHANNEL_ERROR, "channel method on channel 0"),
    };
    Violation {
        code,
        text,
        class_id: method.class_id(),
        method_id: method.method_id(),
    }
}
