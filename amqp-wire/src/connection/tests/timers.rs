//! Timers with injected time: heartbeats both ways, handshake and close deadlines.

use std::time::Duration;

use super::broker::{Broker, SECOND, TUNE};
use crate::connection::{ClientConfig, ConnectionError, Event, State};
use crate::frame::methods::ConnectionTune;
use crate::{Frame, ReplyCode};

fn heartbeat_every(secs: u16) -> Broker {
    Broker::connected_with(
        ClientConfig::default(),
        ConnectionTune {
            heartbeat: secs,
            ..TUNE
        },
    )
}

#[test]
fn an_idle_connection_sends_a_heartbeat_every_half_interval() {
    let mut b = heartbeat_every(2);
    assert_eq!(b.conn.poll_timeout(), Some(b.now + SECOND));
    for _ in 0..5 {
        b.advance(SECOND - Duration::from_millis(1));
        b.expect_silence();
        b.advance(Duration::from_millis(1));
        assert_eq!(b.recv(), Frame::Heartbeat);
        b.send(Frame::Heartbeat); // the broker's, so the client sees it alive
    }
    assert_eq!(b.conn.state(), State::Open);
}

#[test]
fn traffic_counts_as_activity() {
    let mut b = heartbeat_every(10);
    b.advance(4 * SECOND);
    b.conn.update_secret("t".into(), "r").unwrap(); // something to send
    b.recv();
    b.advance(4 * SECOND);
    b.expect_silence(); // 4 s since the last write: not due until 5
    b.advance(SECOND);
    assert_eq!(b.recv(), Frame::Heartbeat);
}

#[test]
fn a_silent_peer_is_dead_after_two_intervals() {
    let mut b = heartbeat_every(5);
    for _ in 0..3 {
        b.advance(3 * SECOND);
        while b.try_recv().is_some() {}
    }
    // 9 s of silence from the broker: alive until 10.
    assert_eq!(b.conn.state(), State::Open);
    b.advance(SECOND);
    assert!(b.conn.is_closed());
    assert_eq!(
        b.events(),
        [Event::Closed(ConnectionError::MissedHeartbeats(5))]
    );
}

#[test]
fn heartbeats_off_means_no_timer() {
    let b = Broker::connected_with(
        ClientConfig {
            heartbeat: Some(0),
            ..Default::default()
        },
        TUNE,
    );
    assert_eq!(b.conn.poll_timeout(), None);
}

#[test]
fn a_broker_without_heartbeats_still_gets_ours() {
    let b = heartbeat_every(0);
    assert_eq!(
        b.conn.poll_timeout(),
        Some(b.now + Duration::from_secs(u64::from(crate::connection::DEFAULT_HEARTBEAT) / 2))
    );
}

#[test]
fn endless_timeouts_saturate() {
    let b = Broker::new(ClientConfig {
        handshake_timeout: Duration::MAX,
        close_timeout: Duration::MAX,
        ..Default::default()
    });
    assert_eq!(b.conn.poll_timeout(), Some(Duration::MAX));
}

#[test]
fn the_handshake_has_a_deadline() {
    let mut b = Broker::new(ClientConfig {
        handshake_timeout: 3 * SECOND,
        ..Default::default()
    });
    assert_eq!(b.conn.poll_timeout(), Some(b.now + 3 * SECOND));
    b.advance(3 * SECOND);
    assert_eq!(
        b.events(),
        [Event::Closed(ConnectionError::HandshakeTimeout)]
    );
}

#[test]
fn a_close_without_close_ok_ends_at_its_deadline() {
    let mut b = Broker::connected_with(
        ClientConfig {
            close_timeout: 2 * SECOND,
            ..Default::default()
        },
        ConnectionTune {
            heartbeat: 0,
            ..TUNE
        },
    );
    b.conn.close(ReplyCode::SUCCESS, "");
    b.expect_method(0, "connection.close");
    b.advance(2 * SECOND);
    assert!(b.conn.is_closed());
    assert_eq!(b.events(), [Event::Closed(ConnectionError::CloseTimeout)]);
}

#[test]
fn eof_while_open_is_unexpected() {
    let mut b = Broker::connected();
    b.conn.handle_eof();
    assert_eq!(b.events(), [Event::Closed(ConnectionError::UnexpectedEof)]);
    assert_eq!(b.conn.poll_timeout(), None);
}

#[test]
fn bytes_held_back_by_the_transport_count_as_the_peer_alive() {
    let mut b = heartbeat_every(5);
    for _ in 0..4 {
        b.advance(3 * SECOND);
        while b.try_recv().is_some() {}
        // The transport holds unread bytes for a slow consumer.
        let now = b.now;
        b.conn.handle_peer_activity(now);
    }
    assert_eq!(
        b.conn.state(),
        State::Open,
        "12 s without reading, yet not dead"
    );
}
