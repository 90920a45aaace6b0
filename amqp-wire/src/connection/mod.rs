//! The client connection state machine, sans-IO.
//!
//! A [`Connection`] is a plain value: it is fed received bytes and the current time, and is
//! asked for bytes to send, for events, and for the next instant it wants to be woken at. It
//! never blocks, reads no clock and owns no socket, so every rule it follows is tested
//! deterministically (see `tests/` beside this file: a scripted broker built from this
//! crate's codec).
//!
//! # The transport's loop
//!
//! Its methods come in four groups:
//! - **(A) getters**: [`Connection::state`], [`Connection::is_closed`], [`Connection::tune`], ...
//! - **(B) input**: [`Connection::handle_input`] with the bytes read,
//!   [`Connection::handle_timeout`] when the instant from `poll_timeout` has come,
//!   [`Connection::handle_eof`] when the socket closed.
//! - **(C) commands**: [`Connection::open_channel`], [`Connection::channel`] then the
//!   [`Channel`]'s methods, [`Connection::close`], [`Connection::update_secret`].
//! - **(D) output**: after every (B) or (C) call, call all three, in this order:
//!   [`Connection::poll_transmit`] (bytes to write), [`Connection::poll_event`] (until `None`),
//!   [`Connection::poll_timeout`] (when to call `handle_timeout`).
//!
//! **Time** comes in as an argument and is never read here: `now` is a [`Duration`] on a
//! monotonic clock the transport keeps, measured from an origin it picks (the moment it
//! created the connection, say), and [`Connection::poll_timeout`] answers on the same clock.
//! Only the differences between instants matter.
//!
//! ```
//! use std::time::Duration;
//! use amqp_wire::connection::{ClientConfig, Connection, Event};
//! use amqp_wire::Transmit;
//! use bytes::{Buf, BytesMut};
//!
//! // The transport's clock: `origin.elapsed()` of an `Instant` it took when it connected,
//! // say. Fixed here.
//! let now = Duration::ZERO;
//! let mut conn = Connection::client(ClientConfig::default(), now);
//! let mut out = Transmit::new();
//! let mut read_buf = BytesMut::new();
//! // One turn of the loop; a real transport repeats it until `is_closed()` and `out` is empty.
//! conn.poll_transmit(now, &mut out); // the protocol header, first
//! assert_eq!(out.chunk(), b"AMQP\x00\x00\x09\x01");
//! // socket.write_vectored(out.chunks_vectored(..)); out.advance(written);
//! // read into `read_buf`, then:
//! conn.handle_input(now, &mut read_buf);
//! while let Some(event) = conn.poll_event() {
//!     match event {
//!         Event::Connected { .. } => { /* open channels */ }
//!         _ => {}
//!     }
//! }
//! let _wake_at = conn.poll_timeout(); // sleep until origin + this, or until readable
//! ```

mod api;
mod channel;
mod config;
mod content;
mod error;
mod event;
mod handshake;
mod heartbeat;
mod input;
mod shared;
mod tags;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;

pub use self::api::Channel;
use self::channel::{ChannelState, Outcome, Pending};
pub use self::config::{ClientConfig, DEFAULT_FRAME_MAX, DEFAULT_HEARTBEAT, Sasl};
use self::error::Violation;
pub use self::error::{CloseReason, ConnectionError, Initiator, UsageError};
pub use self::event::{Confirmation, Delivery, Event, RequestId, Returned, Tune};
use self::heartbeat::Heartbeat;
use self::input::peer_reason;
use self::shared::Shared;
use crate::codec::FrameDecoder;
use crate::error::{DecodeError, ReplyCode};
use crate::frame::content::ContentHeader;
use crate::frame::method::Method;
use crate::frame::methods::{
    ChannelOpen, ConnectionClose, ConnectionCloseOk, ConnectionUpdateSecret, TxSelectOk,
};
use crate::frame::{FRAME_MIN_SIZE, Frame};
use crate::table::FieldTable;
use crate::transmit::Transmit;
use crate::types::{ChannelId, LongStr, ProtocolVersion, ShortStr};

/// The largest frame accepted before `connection.tune` sets the limit. The spec's minimum is
/// 4096, but a broker with many server properties may send a larger `connection.start`.
const PRE_TUNE_FRAME_MAX: u32 = 128 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Protocol header, start, tune, open.
    Handshake,
    /// Open: channels may be used.
    Open,
    /// A `connection.close` was sent; waiting for `close-ok`.
    Closing,
    /// Over. The transport writes what `poll_transmit` still gives, then closes the socket.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for `connection.start`.
    Start,
    /// `start-ok` sent; waiting for `tune` (or `secure`).
    Tune,
    /// `tune-ok` and `open` sent; waiting for `open-ok`.
    OpenOk,
    Open,
    Closing,
    Closed,
}

/// A client connection's protocol state: see the module docs for the loop that drives it.
#[derive(Debug)]
pub struct Connection {
    config: ClientConfig,
    virtual_host: ShortStr,
    phase: Phase,
    decoder: FrameDecoder,
    shared: Shared,
    /// Indexed by channel number; `None` is a free number.
    channels: Vec<Option<ChannelState>>,
    tune: Tune,
    server_properties: FieldTable,
    heartbeat: Heartbeat,
    now: Duration,
    handshake_deadline: Duration,
    close_deadline: Option<Duration>,
    /// Why we sent `connection.close`, reported when `close-ok` comes.
    closing: Option<CloseReason>,
    /// Sticky: set once, reported by `Event::Closed` once.
    error: Option<ConnectionError>,
    blocked: bool,
    secret_requests: VecDeque<RequestId>,
}

impl Connection {
    /// A client connection; the protocol header is queued for `poll_transmit` at once.
    /// `now` is the transport's monotonic clock (see the module docs on time).
    pub fn client(config: ClientConfig, now: Duration) -> Self {
        let mut shared = Shared::new(FRAME_MIN_SIZE, config.max_message_size);
        shared.out.push_raw(&ProtocolVersion::AMQP_0_9_1.header());
        let virtual_host = ShortStr::try_from(config.virtual_host.as_str());
        let mut conn = Self {
            virtual_host: virtual_host.clone().unwrap_or_default(),
            phase: Phase::Start,
            decoder: FrameDecoder::new(PRE_TUNE_FRAME_MAX),
            shared,
            channels: Vec::new(),
            tune: Tune::default(),
            server_properties: FieldTable::new(),
            heartbeat: Heartbeat::new(now),
            now,
            handshake_deadline: now.saturating_add(config.handshake_timeout),
            close_deadline: None,
            closing: None,
            error: None,
            blocked: false,
            secret_requests: VecDeque::new(),
            config,
        };
        if virtual_host.is_err() {
            conn.finish(ConnectionError::InvalidConfig(
                "virtual host longer than 255 octets",
            ));
        }
        conn
    }

    // ----- (A) getters -----

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Start | Phase::Tune | Phase::OpenOk => State::Handshake,
            Phase::Open => State::Open,
            Phase::Closing => State::Closing,
            Phase::Closed => State::Closed,
        }
    }

    /// True when the connection is over; write out what `poll_transmit` gives, then close.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Why the connection ended (or is ending), once it has.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// The agreed limits (all 0 before `connection.tune`).
    pub fn tune(&self) -> Tune {
        self.tune
    }

    /// The broker's `server-properties` (empty before `connection.start`).
    pub fn server_properties(&self) -> &FieldTable {
        &self.server_properties
    }

    /// True while the broker has blocked publishers (`connection.blocked`).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    // ----- (B) input -----

    /// Consumes the whole frames at the front of `src`, leaving a partial frame there.
    pub fn handle_input(&mut self, now: Duration, src: &mut BytesMut) {
        self.now = now;
        if !src.is_empty() {
            self.heartbeat.received(now);
        }
        while self.phase != Phase::Closed {
            match self.decoder.decode(src) {
                // By reference: a frame is 384 octets, and moving it out of the result and on
                // to its channel would copy all of it at each step, for every frame.
                Ok(Some(ref mut frame)) => self.handle_frame(frame),
                Ok(None) => return,
                Err(e) => self.decode_failed(e),
            }
        }
        // Closed: nothing more from this peer is read.
        src.clear();
    }

    /// Acts on the instant `poll_timeout` gave: a heartbeat to send, a dead peer, a
    /// handshake or close that took too long.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        match self.phase {
            Phase::Closed => return,
            Phase::Start | Phase::Tune | Phase::OpenOk if now >= self.handshake_deadline => {
                return self.finish(ConnectionError::HandshakeTimeout);
            }
            Phase::Closing if self.close_deadline.is_some_and(|d| now >= d) => {
                return self.finish(ConnectionError::CloseTimeout);
            }
            _ => {}
        }
        if self.heartbeat.dead_at().is_some_and(|d| now >= d) {
            tracing::warn!(
                interval = self.heartbeat.interval(),
                "peer missed its heartbeats"
            );
            return self.finish(ConnectionError::MissedHeartbeats(self.heartbeat.interval()));
        }
        if self.heartbeat.send_at().is_some_and(|d| now >= d) {
            // A heartbeat frame always encodes.
            let _ = self.shared.out.push_frame(&Frame::Heartbeat);
            self.heartbeat.sent(now);
        }
    }

    /// The transport holds the peer's bytes back on purpose (a consumer that is not read
    /// makes it stop reading the socket): the peer is not silent, we are not listening, so its
    /// heartbeat deadline moves on to `now`.
    pub fn handle_peer_activity(&mut self, now: Duration) {
        self.now = now;
        self.heartbeat.received(now);
    }

    /// The socket closed (read returned 0).
    pub fn handle_eof(&mut self) {
        let error = match self.phase {
            Phase::Closed => return,
            Phase::Closing => match self.closing.clone() {
                Some(reason) => ConnectionError::Closed(reason),
                None => ConnectionError::UnexpectedEof,
            },
            // Without (or before) authentication_failure_close, a refused login is a bare
            // close right after start-ok.
            Phase::Tune => ConnectionError::AuthenticationFailed(CloseReason::new(
                ReplyCode::ACCESS_REFUSED,
                "connection closed during authentication",
                Initiator::Peer,
            )),
            _ => ConnectionError::UnexpectedEof,
        };
        self.finish(error);
    }

    // ----- (C) commands -----

    /// Opens a channel on the lowest free number; [`Event::ChannelOpened`] says when it is
    /// open. Numbers are reused once the previous channel's close-ok has passed.
    ///
    /// # Errors
    /// [`UsageError::ConnectionNotOpen`], or [`UsageError::ChannelsExhausted`] when every
    /// number up to `channel_max` is taken.
    pub fn open_channel(&mut self) -> Result<ChannelId, UsageError> {
        if self.phase != Phase::Open {
            return Err(UsageError::ConnectionNotOpen);
        }
        let max = self.channel_max();
        let id = (1..=max)
            .find(|&n| {
                self.channels
                    .get(usize::from(n))
                    .is_none_or(Option::is_none)
            })
            .ok_or(UsageError::ChannelsExhausted(max))?;
        self.open_channel_at(ChannelId(id))?;
        Ok(ChannelId(id))
    }

    /// Opens a channel on a chosen number, such as the number a channel had before a
    /// reconnection; [`Event::ChannelOpened`] says when it is open.
    ///
    /// # Errors
    /// [`UsageError::ConnectionNotOpen`]; [`UsageError::ChannelNotOpen`] for 0 or a number
    /// above `channel_max`; [`UsageError::ChannelsExhausted`] when the number is in use.
    pub fn open_channel_at(&mut self, channel: ChannelId) -> Result<(), UsageError> {
        if self.phase != Phase::Open {
            return Err(UsageError::ConnectionNotOpen);
        }
        let max = self.channel_max();
        if channel.0 == 0 || channel.0 > max {
            return Err(UsageError::ChannelNotOpen(channel));
        }
        let slot = usize::from(channel.0);
        if self.channels.get(slot).is_some_and(Option::is_some) {
            return Err(UsageError::ChannelsExhausted(max));
        }
        if self.channels.len() <= slot {
            self.channels.resize_with(slot + 1, || None);
        }
        self.shared.send(channel, ChannelOpen.into())?;
        let mut state = ChannelState::opening(channel);
        let request = self.shared.next_request();
        state.pending.push_back(Pending {
            request,
            replies: &[(20, 11)],
            after: channel::After::Nothing,
        });
        self.channels[slot] = Some(state);
        Ok(())
    }

    /// The highest usable channel number.
    fn channel_max(&self) -> u16 {
        if self.tune.channel_max == 0 {
            u16::MAX
        } else {
            self.tune.channel_max
        }
    }

    /// The open channel `id`, to give commands on.
    ///
    /// # Errors
    /// [`UsageError::ConnectionNotOpen`]; [`UsageError::ChannelNotOpen`] for a number that is
    /// free or still opening; [`UsageError::ChannelClosed`] with the reason for one closing.
    pub fn channel(&mut self, id: ChannelId) -> Result<Channel<'_>, UsageError> {
        if self.phase != Phase::Open {
            return Err(UsageError::ConnectionNotOpen);
        }
        let Some(Some(state)) = self.channels.get_mut(usize::from(id.0)) else {
            return Err(UsageError::ChannelNotOpen(id));
        };
        match &state.phase {
            channel::Phase::Open => Ok(Channel {
                state,
                shared: &mut self.shared,
            }),
            channel::Phase::Opening => Err(UsageError::ChannelNotOpen(id)),
            channel::Phase::Closing(reason) => Err(UsageError::ChannelClosed {
                channel: id,
                reason: reason.clone(),
            }),
        }
    }

    /// Closes the connection: sends `connection.close` and waits for `close-ok` (at most the
    /// configured close timeout), dropping every other frame meanwhile. Does nothing if the
    /// connection is already closing or closed.
    pub fn close(&mut self, code: ReplyCode, text: &str) {
        let reason = CloseReason::new(code, text, Initiator::Local);
        match self.phase {
            Phase::Closing | Phase::Closed => {}
            // Nothing but the protocol header was sent: there is nothing to close politely.
            Phase::Start => self.finish(ConnectionError::Closed(reason)),
            _ => self.send_close(reason),
        }
    }

    /// Replaces the connection's secret, such as an expiring OAuth 2 token
    /// (`connection.update-secret`); the reply is an [`Event::Reply`] on channel 0.
    ///
    /// # Errors
    /// [`UsageError::ConnectionNotOpen`].
    pub fn update_secret(
        &mut self,
        new_secret: LongStr,
        reason: &str,
    ) -> Result<RequestId, UsageError> {
        if self.phase != Phase::Open {
            return Err(UsageError::ConnectionNotOpen);
        }
        let reason = error::truncated(reason);
        self.shared.send(
            ChannelId::CONNECTION,
            ConnectionUpdateSecret { new_secret, reason }.into(),
        )?;
        let request = self.shared.next_request();
        self.secret_requests.push_back(request);
        Ok(request)
    }

    // ----- (D) output -----

    /// Moves every queued frame into `out` (published bodies by reference) and returns the
    /// number of octets moved.
    #[must_use = "the octets moved into `out` must be written to the socket"]
    pub fn poll_transmit(&mut self, now: Duration, out: &mut Transmit) -> usize {
        let n = self.shared.out.len();
        if n > 0 {
            out.append(&mut self.shared.out);
            self.heartbeat.sent(now);
        }
        n
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.events.pop_front()
    }

    /// When to call [`Connection::handle_timeout`] if nothing else happens first, on the
    /// transport's clock (the `now` it passes in).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let deadline = match self.phase {
            Phase::Closed => return None,
            Phase::Start | Phase::Tune | Phase::OpenOk => Some(self.handshake_deadline),
            Phase::Closing => self.close_deadline,
            Phase::Open => None,
        };
        match (deadline, self.heartbeat.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
