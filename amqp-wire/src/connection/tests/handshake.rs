//! The handshake: start, secure, tune, open, and the ways it fails.

use super::broker::{Broker, TUNE, start};
use crate::connection::{
    ClientConfig, ConnectionError, DEFAULT_FRAME_MAX, DEFAULT_HEARTBEAT, Event, Sasl, State, Tune,
};
use crate::frame::method::Method;
use crate::frame::methods::{ConnectionClose, ConnectionOpenOk, ConnectionSecure, ConnectionTune};
use crate::{FieldValue, LongStr, ProtocolVersion, ReplyCode, ShortStr};

#[test]
fn handshake_sends_credentials_capabilities_tune_and_vhost() {
    let config = ClientConfig {
        virtual_host: "orders".into(),
        connection_name: Some("svc-1".into()),
        ..Default::default()
    };
    let mut b = Broker::new(config);
    assert_eq!(b.conn.state(), State::Handshake);
    b.expect_silence(); // the header alone, until the broker speaks
    b.send_method(0, start());
    let Method::ConnectionStartOk(ok) = b.expect_method(0, "connection.start-ok") else {
        unreachable!()
    };
    assert_eq!(ok.mechanism, "PLAIN");
    assert_eq!(ok.response, LongStr::from("\0guest\0guest"));
    assert_eq!(
        ok.client_properties
            .get("connection_name")
            .and_then(FieldValue::as_str),
        Some("svc-1")
    );
    let Some(FieldValue::Table(caps)) = ok.client_properties.get("capabilities") else {
        panic!("no capabilities")
    };
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        assert_eq!(caps.get(cap), Some(&FieldValue::Bool(true)), "{cap}");
    }
    b.send_method(0, TUNE);
    let Method::ConnectionTuneOk(tune_ok) = b.expect_method(0, "connection.tune-ok") else {
        unreachable!()
    };
    assert_eq!(
        (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat),
        (2047, 131_072, 60)
    );
    let Method::ConnectionOpen(open) = b.expect_method(0, "connection.open") else {
        unreachable!()
    };
    assert_eq!(open.virtual_host, "orders");
    b.send_method(0, ConnectionOpenOk);
    let events = b.events();
    let [
        Event::Connected {
            server_properties,
            tune,
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        *tune,
        Tune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60
        }
    );
    assert_eq!(
        server_properties
            .get("product")
            .and_then(FieldValue::as_str),
        Some("RabbitMQ")
    );
    assert_eq!(b.conn.state(), State::Open);
}

#[test]
fn tune_takes_the_lower_non_zero_value_and_the_client_may_ask_for_less() {
    let config = ClientConfig {
        channel_max: 100,
        frame_max: 65_536,
        heartbeat: Some(10),
        ..Default::default()
    };
    let b = Broker::connected_with(config, TUNE);
    assert_eq!(
        b.conn.tune(),
        Tune {
            channel_max: 100,
            frame_max: 65_536,
            heartbeat: 10
        }
    );

    let unlimited = ConnectionTune {
        channel_max: 0,
        frame_max: 0,
        heartbeat: 0,
    };
    let b = Broker::connected_with(
        ClientConfig {
            channel_max: 5,
            ..Default::default()
        },
        unlimited,
    );
    assert_eq!(
        b.conn.tune(),
        Tune {
            channel_max: 5,
            frame_max: DEFAULT_FRAME_MAX,
            heartbeat: DEFAULT_HEARTBEAT,
        },
        "a broker's 0 (no limit, no heartbeats) gets our defaults"
    );

    // A hostile offer cannot raise what one frame may make us buffer.
    let huge = ConnectionTune {
        channel_max: 0,
        frame_max: u32::MAX,
        heartbeat: 0,
    };
    let b = Broker::connected_with(ClientConfig::default(), huge.clone());
    assert_eq!(b.conn.tune().frame_max, DEFAULT_FRAME_MAX);
    let b = Broker::connected_with(
        ClientConfig {
            frame_max: 16_384,
            ..Default::default()
        },
        huge,
    );
    assert_eq!(b.conn.tune().frame_max, 16_384);

    let b = Broker::connected_with(
        ClientConfig {
            heartbeat: Some(0),
            ..Default::default()
        },
        TUNE,
    );
    assert_eq!(b.conn.tune().heartbeat, 0, "Some(0) turns heartbeats off");
}

#[test]
fn amqplain_and_external_and_a_secure_challenge() {
    let config = ClientConfig {
        sasl: Sasl::AmqPlain {
            username: "u".into(),
            password: "p".into(),
        },
        ..Default::default()
    };
    let mut b = Broker::new(config);
    b.send_method(0, start());
    let Method::ConnectionStartOk(ok) = b.expect_method(0, "connection.start-ok") else {
        unreachable!()
    };
    assert_eq!(ok.mechanism, "AMQPLAIN");
    b.send_method(
        0,
        ConnectionSecure {
            challenge: LongStr::from("more?"),
        },
    );
    let Method::ConnectionSecureOk(again) = b.expect_method(0, "connection.secure-ok") else {
        unreachable!()
    };
    assert_eq!(again.response, ok.response);

    let mut b = Broker::new(ClientConfig {
        sasl: Sasl::External,
        ..Default::default()
    });
    let mut offer = start();
    offer.mechanisms = LongStr::from("PLAIN EXTERNAL");
    b.send_method(0, offer);
    let Method::ConnectionStartOk(ok) = b.expect_method(0, "connection.start-ok") else {
        unreachable!()
    };
    assert_eq!(
        (ok.mechanism.to_str(), ok.response.len()),
        (Ok("EXTERNAL"), 0)
    );
}

#[test]
fn a_mechanism_the_broker_does_not_offer_is_a_clear_error() {
    let mut b = Broker::new(ClientConfig {
        sasl: Sasl::External,
        ..Default::default()
    });
    b.send_method(0, start());
    let events = b.events();
    assert!(
        matches!(
            &events[..],
            [Event::Closed(ConnectionError::UnsupportedMechanism {
                wanted: "EXTERNAL",
                ..
            })]
        ),
        "{events:?}"
    );
    assert!(b.conn.is_closed());
    b.expect_silence();
}

#[test]
fn a_refused_login_is_authentication_failed() {
    let mut b = Broker::new(ClientConfig::default());
    b.send_method(0, start());
    b.expect_method(0, "connection.start-ok");
    b.send_method(
        0,
        ConnectionClose {
            reply_code: ReplyCode::ACCESS_REFUSED,
            reply_text: ShortStr::from_static("ACCESS_REFUSED - Login was refused"),
            class_id: 0,
            method_id: 0,
        },
    );
    b.expect_method(0, "connection.close-ok");
    let events = b.events();
    let [Event::Closed(ConnectionError::AuthenticationFailed(reason))] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(reason.code, ReplyCode::ACCESS_REFUSED);
    assert!(b.conn.is_closed());
}

#[test]
fn a_bare_close_after_start_ok_is_authentication_failed() {
    let mut b = Broker::new(ClientConfig::default());
    b.send_method(0, start());
    b.expect_method(0, "connection.start-ok");
    b.conn.handle_eof();
    assert!(matches!(
        b.events().as_slice(),
        [Event::Closed(ConnectionError::AuthenticationFailed(_))]
    ));
}

#[test]
fn a_refused_vhost_is_vhost_refused() {
    let mut b = Broker::new(ClientConfig {
        virtual_host: "nope".into(),
        ..Default::default()
    });
    b.send_method(0, start());
    b.expect_method(0, "connection.start-ok");
    b.send_method(0, TUNE);
    b.expect_method(0, "connection.tune-ok");
    b.expect_method(0, "connection.open");
    b.send_method(
        0,
        ConnectionClose {
            reply_code: ReplyCode::NOT_ALLOWED,
            reply_text: ShortStr::from_static("NOT_ALLOWED - vhost nope not found"),
            class_id: 10,
            method_id: 40,
        },
    );
    b.expect_method(0, "connection.close-ok");
    let events = b.events();
    let [Event::Closed(ConnectionError::VhostRefused(reason))] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        (reason.code, reason.class_id, reason.method_id),
        (ReplyCode::NOT_ALLOWED, 10, 40)
    );
}

#[test]
fn a_protocol_header_reply_is_unsupported_version() {
    let mut b = Broker::new(ClientConfig::default());
    b.send_raw(b"AMQP\x00\x00\x09\x01");
    let events = b.events();
    assert_eq!(
        events,
        [Event::Closed(ConnectionError::UnsupportedVersion(
            ProtocolVersion::AMQP_0_9_1
        ))]
    );
    b.expect_silence();
}

#[test]
fn a_start_with_another_version_is_unsupported_version() {
    let mut b = Broker::new(ClientConfig::default());
    let mut offer = start();
    offer.version_minor = 8;
    b.send_method(0, offer);
    assert_eq!(
        b.events(),
        [Event::Closed(ConnectionError::UnsupportedVersion(
            ProtocolVersion([0, 0, 0, 8])
        ))]
    );
}

#[test]
fn a_broker_frame_max_below_the_minimum_is_refused() {
    let mut b = Broker::new(ClientConfig::default());
    b.send_method(0, start());
    b.expect_method(0, "connection.start-ok");
    b.send_method(
        0,
        ConnectionTune {
            channel_max: 0,
            frame_max: 512,
            heartbeat: 0,
        },
    );
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(close.reply_code, ReplyCode::NOT_ALLOWED);
}

#[test]
fn an_unexpected_method_during_the_handshake_closes_with_503() {
    let mut b = Broker::new(ClientConfig::default());
    b.send_method(0, start());
    b.expect_method(0, "connection.start-ok");
    b.send_method(0, ConnectionOpenOk);
    let Method::ConnectionClose(close) = b.expect_method(0, "connection.close") else {
        unreachable!()
    };
    assert_eq!(
        (close.reply_code, close.class_id, close.method_id),
        (ReplyCode::COMMAND_INVALID, 10, 41)
    );
    assert!(matches!(
        b.events().as_slice(),
        [Event::Closed(ConnectionError::Protocol(_))]
    ));
}

#[test]
fn a_virtual_host_too_long_is_refused_at_once() {
    let b = Broker::new(ClientConfig {
        virtual_host: "v".repeat(300),
        ..Default::default()
    });
    assert!(matches!(
        b.conn.error(),
        Some(ConnectionError::InvalidConfig(_))
    ));
}

#[test]
fn a_close_before_start_is_answered_and_reported() {
    let mut b = Broker::new(ClientConfig::default());
    b.send_method(
        0,
        ConnectionClose {
            reply_code: ReplyCode::CONNECTION_FORCED,
            reply_text: ShortStr::from_static("CONNECTION_FORCED - shutdown"),
            class_id: 0,
            method_id: 0,
        },
    );
    b.expect_method(0, "connection.close-ok");
    let events = b.events();
    assert!(
        matches!(&events[..], [Event::Closed(ConnectionError::Closed(r))] if r.code == ReplyCode::CONNECTION_FORCED),
        "{events:?}"
    );
}

#[test]
fn a_small_frame_max_is_raised_to_what_rabbitmq_4_accepts() {
    let config = ClientConfig {
        frame_max: 4096,
        ..Default::default()
    };
    let b = Broker::connected_with(config, TUNE);
    assert_eq!(b.conn.tune().frame_max, 8192);
}
