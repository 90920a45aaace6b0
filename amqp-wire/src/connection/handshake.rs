//! The client's half of the handshake: start, secure, tune, open.
//!
//! ```text
//!  header ─► Start ──start/start-ok──► Tune ──tune/tune-ok + open──► OpenOk ──open-ok──► Open
//!                                      │  ▲ secure/secure-ok              │
//!                                      │  └───────┘                       │
//!                  close 403 / EOF: AuthenticationFailed     close 530: VhostRefused
//! ```

use super::config::{clamp_frame_max, negotiate, negotiate_frame_max, negotiate_heartbeat};
use super::error::Violation;
use super::{Connection, ConnectionError, Event, Phase, Tune, peer_reason};
use crate::error::ReplyCode;
use crate::frame::FRAME_MIN_SIZE;
use crate::frame::method::Method;
use crate::frame::methods::{
    ConnectionCloseOk, ConnectionOpen, ConnectionSecureOk, ConnectionStart, ConnectionStartOk,
    ConnectionTune, ConnectionTuneOk,
};
use crate::types::{ChannelId, ProtocolVersion, ShortStr};

impl Connection {
    pub(super) fn handshake(&mut self, method: Method) {
        match (self.phase, method) {
            (Phase::Start, Method::ConnectionStart(start)) => self.on_start(start),
            // A broker shutting down may close before it starts; answer, and report why.
            (Phase::Start, Method::ConnectionClose(close)) => {
                let _ = self
                    .shared
                    .send(ChannelId::CONNECTION, ConnectionCloseOk.into());
                self.finish(ConnectionError::Closed(peer_reason(&close)));
            }
            (Phase::Tune, Method::ConnectionSecure(_)) => {
                // PLAIN, AMQPLAIN and EXTERNAL have no second step; answer with the same response.
                let response = self.config.sasl.response();
                let _ = self.shared.send(
                    ChannelId::CONNECTION,
                    ConnectionSecureOk { response }.into(),
                );
            }
            (Phase::Tune, Method::ConnectionTune(tune)) => self.on_tune(tune),
            (Phase::OpenOk, Method::ConnectionOpenOk(_)) => {
                self.phase = Phase::Open;
                tracing::debug!(tune = ?self.tune, "connection open");
                self.shared.events.push_back(Event::Connected {
                    server_properties: self.server_properties.clone(),
                    tune: self.tune,
                });
            }
            (phase @ (Phase::Tune | Phase::OpenOk), Method::ConnectionClose(close)) => {
                let _ = self
                    .shared
                    .send(ChannelId::CONNECTION, ConnectionCloseOk.into());
                let reason = peer_reason(&close);
                let error = match (phase, reason.code) {
                    (Phase::Tune, _) => ConnectionError::AuthenticationFailed(reason),
                    (
                        _,
                        ReplyCode::NOT_ALLOWED
                        | ReplyCode::ACCESS_REFUSED
                        | ReplyCode::INVALID_PATH,
                    ) => ConnectionError::VhostRefused(reason),
                    _ => ConnectionError::Closed(reason),
                };
                self.finish(error);
            }
            (_, method) => self.violation(Violation {
                code: ReplyCode::COMMAND_INVALID,
                text: "unexpected method during the handshake",
                class_id: method.class_id(),
                method_id: method.method_id(),
            }),
        }
    }

    fn on_start(&mut self, start: ConnectionStart) {
        if (start.version_major, start.version_minor) != (0, 9) {
            let version = ProtocolVersion([0, 0, start.version_major, start.version_minor]);
            return self.finish(ConnectionError::UnsupportedVersion(version));
        }
        let wanted = self.config.sasl.mechanism();
        let offered = start
            .mechanisms
            .as_bytes()
            .split(|&b| b == b' ')
            .any(|m| m == wanted.as_bytes());
        if !offered {
            return self.finish(ConnectionError::UnsupportedMechanism {
                wanted,
                offered: start.mechanisms,
            });
        }
        self.server_properties = start.server_properties;
        let start_ok = ConnectionStartOk {
            client_properties: self.config.client_properties(),
            mechanism: ShortStr::from_static(wanted),
            response: self.config.sasl.response(),
            locale: ShortStr::from_static("en_US"),
        };
        // start-ok goes out before tune, under the broker's initial frame limit (4096 on 3.x).
        if let Err(e) = self.shared.send(ChannelId::CONNECTION, start_ok.into()) {
            tracing::error!(%e, "connection.start-ok does not fit the initial frame size");
            return self.finish(ConnectionError::InvalidConfig(
                "client properties too large for the first frame",
            ));
        }
        self.phase = Phase::Tune;
    }

    fn on_tune(&mut self, offer: ConnectionTune) {
        if offer.frame_max != 0 && offer.frame_max < FRAME_MIN_SIZE {
            return self.violation(Violation::new(
                ReplyCode::NOT_ALLOWED,
                "broker offered frame_max below 4096",
            ));
        }
        let tune = Tune {
            channel_max: negotiate(self.config.channel_max, offer.channel_max),
            frame_max: negotiate_frame_max(clamp_frame_max(self.config.frame_max), offer.frame_max),
            heartbeat: negotiate_heartbeat(self.config.heartbeat, offer.heartbeat),
        };
        let tune_ok = ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: tune.heartbeat,
        };
        let _ = self.shared.send(ChannelId::CONNECTION, tune_ok.into());
        self.tune = tune;
        self.decoder.set_max_frame_size(tune.frame_max);
        self.shared.frame_max = tune.frame_max;
        self.heartbeat.start(tune.heartbeat, self.now);
        let open = ConnectionOpen {
            virtual_host: self.virtual_host.clone(),
        };
        let _ = self.shared.send(ChannelId::CONNECTION, open.into());
        self.phase = Phase::OpenOk;
    }
}
