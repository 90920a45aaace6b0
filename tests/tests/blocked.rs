//! `connection.blocked` / `unblocked` with a real resource alarm.
//!
//! The one test here sets RabbitMQ's memory watermark to 0, which blocks every publisher on
//! the broker, so it lives alone in its own test binary (cargo runs test binaries one after
//! another). The watermark is always put back to 0.4, even when the test fails. The alarm is
//! raised with `RABBITMQCTL` (see [`amqp_tests::rabbitmqctl`]) on the node behind `AMQP_URL`.

use std::time::Duration;

use amqp_client::{BasicProperties, Confirmation, ConnectionConfig, Error, PublishOptions};
use amqp_tests::{amqp_url, exclusive, publish_confirmed, rabbitmqctl, unique};

const RESTORED_WATERMARK: &str = "0.4";

/// Puts the watermark back when dropped, panic or not.
struct RestoreWatermark;

impl Drop for RestoreWatermark {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl::run(&["set_vm_memory_high_watermark", RESTORED_WATERMARK]) {
            eprintln!("COULD NOT RESTORE THE MEMORY WATERMARK, the broker stays blocked: {e}");
        }
    }
}

async fn ctl(args: &'static [&'static str]) {
    if let Err(e) = tokio::task::spawn_blocking(move || rabbitmqctl::run(args))
        .await
        .expect("the rabbitmqctl task")
    {
        panic!(
            "this test raises a memory alarm on the broker at {} with RABBITMQCTL: {e}",
            amqp_url()
        );
    }
}

async fn wait_blocked(conn: &amqp_client::Connection, blocked: bool) {
    let mut changes = conn.blocked_changes();
    tokio::time::timeout(Duration::from_secs(30), changes.wait_for(|b| *b == blocked))
        .await
        .unwrap_or_else(|_| panic!("is_blocked() did not become {blocked} within 30 s"))
        .expect("the connection is alive");
    assert_eq!(conn.is_blocked(), blocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_blocks_publishing_until_it_clears() {
    let config = ConnectionConfig {
        blocked_timeout: Some(Duration::from_millis(300)),
        ..amqp_tests::config()
    };
    let conn = amqp_client::Connection::connect_with(config).await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    let queue = unique("blocked");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    ch.confirm_select().await.unwrap();
    assert!(!conn.is_blocked());

    let restore = RestoreWatermark;
    ctl(&["set_vm_memory_high_watermark", "0"]).await;
    // RabbitMQ sends connection.blocked to a connection when it next publishes under the
    // alarm, so publish until it comes. Those publishes wait in the broker until it clears.
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !conn.is_blocked() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection.blocked within 30 s of the alarm"
        );
        let confirm = ch
            .publish(
                "",
                &queue,
                PublishOptions::default(),
                BasicProperties::default(),
                "held",
            )
            .await
            .unwrap();
        held.push(confirm);
        let mut changes = conn.blocked_changes();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.wait_for(|b| *b)).await;
    }
    wait_blocked(&conn, true).await;

    // While blocked, a publish waits at most blocked_timeout.
    let started = std::time::Instant::now();
    let err = ch
        .publish(
            "",
            &queue,
            PublishOptions::default(),
            BasicProperties::default(),
            "refused",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Blocked(after) if after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(290));
    // That is no error of the channel or the connection.
    assert!(!ch.is_closed());

    drop(restore);
    wait_blocked(&conn, false).await;
    // What was published under the alarm gets through once it clears.
    for confirm in held.drain(..) {
        let outcome = tokio::time::timeout(Duration::from_secs(10), confirm)
            .await
            .expect("confirm after the alarm cleared")
            .unwrap();
        assert_eq!(outcome, Confirmation::Ack);
    }
    assert_eq!(
        publish_confirmed(&ch, "", &queue, BasicProperties::default(), "sent").await,
        Confirmation::Ack
    );
    let mut bodies = Vec::new();
    while let Some(got) = ch.get(&queue, true).await.unwrap() {
        bodies.push(String::from_utf8(got.delivery.body.to_vec()).unwrap());
    }
    assert_eq!(bodies.last().map(String::as_str), Some("sent"));
    assert!(
        bodies[..bodies.len() - 1].iter().all(|b| b == "held"),
        "{bodies:?}"
    );
    conn.close().await.unwrap();
}
