//! Helpers of the dispatcher's tests: one in-process dispatcher, publishing, declaring.

use std::time::Duration;

use amqp_client::{
    BasicProperties, Channel, Connection, ConnectionConfig, FieldTable, PublishOptions,
};
use messaging_patterns::dispatcher::{Config, Dispatcher, Registry};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{url, within};

/// A running dispatcher: send on the sender to stop it.
pub type Run = (
    oneshot::Sender<()>,
    JoinHandle<Result<(), messaging_patterns::dispatcher::DispatcherError>>,
);

/// Starts a dispatcher for `yaml`; send on the returned sender to stop it.
pub fn start(yaml: &str, registry: Registry) -> Run {
    let config = Config::parse(yaml, registry.names()).unwrap();
    let connection = ConnectionConfig::from_uri(&url()).unwrap();
    let dispatcher = Dispatcher::new(config, registry, connection).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(dispatcher.run(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

pub async fn stop(run: Run) {
    let (stop, task) = run;
    stop.send(()).unwrap();
    within(20, "the dispatcher to stop", task)
        .await
        .unwrap()
        .unwrap();
}

pub async fn publish(
    channel: &Channel,
    exchange: &str,
    key: &str,
    headers: FieldTable,
    body: String,
) {
    let props = BasicProperties {
        headers: Some(headers),
        ..Default::default()
    };
    let confirm = channel
        .publish(exchange, key, PublishOptions::default(), props, body)
        .await
        .unwrap();
    confirm.await.unwrap();
}

pub async fn confirming(conn: &Connection) -> Channel {
    let channel = conn.open_channel().await.unwrap();
    channel.confirm_select().await.unwrap();
    channel
}

/// Waits until the queue exists (the dispatcher declared it).
pub async fn declared(conn: &Connection, queue: &str) {
    within(10, "the queue to be declared", async {
        loop {
            let channel = conn.open_channel().await.unwrap();
            let passive = amqp_client::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if channel.queue_declare(queue, passive).await.is_ok() {
                channel.close().await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

pub async fn delete(conn: &Connection, queues: &[&str], exchanges: &[&str]) {
    let channel = conn.open_channel().await.unwrap();
    for queue in queues {
        // With the dead-letter queue the dispatcher declared for its consumer.
        for name in [queue.to_string(), format!("{queue}.dead")] {
            channel
                .queue_delete(&name, Default::default())
                .await
                .unwrap();
        }
    }
    for exchange in exchanges {
        channel.exchange_delete(exchange, false).await.unwrap();
    }
    channel.close().await.unwrap();
}

/// The next message of `queue` (acked), waiting up to `secs` seconds for one, and for the
/// queue to exist (a dispatcher declares its dead-letter queues after its own queues).
pub async fn get_within(conn: &Connection, queue: &str, secs: u64) -> amqp_client::Delivery {
    within(secs, "a message in the queue", async {
        let channel = conn.open_channel().await.unwrap();
        declared(conn, queue).await;
        loop {
            if let Some(got) = channel.get(queue, true).await.unwrap() {
                channel.close().await.unwrap();
                return got.delivery;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Sends SIGTERM to a child process (a dispatcher binary under test).
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("the child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -TERM {pid}");
}
