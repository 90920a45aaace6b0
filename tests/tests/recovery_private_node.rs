//! A broker stopped and restarted mid-stream: a private RabbitMQ node (own node name, ports,
//! cookie and data directory; never the shared node on 5672) is restarted while producers
//! publish persistent messages with confirms to a durable queue and consumers ack them. No
//! confirmed message may be lost.
//!
//! A test binary of its own: booting a node takes several seconds of CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amqp_client::{ConnectionConfig, Recovery};
use amqp_tests::at_least_once::{self, Progress, Spec};
use amqp_tests::private_node::PrivateNode;
use amqp_tests::unique;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_a_broker_restart() {
    amqp_tests::init_logging();
    let booted = Instant::now();
    let node = tokio::task::spawn_blocking(PrivateNode::start)
        .await
        .expect("boot task");
    println!("private node booted in {:?}", booted.elapsed());
    let config = |name: &str| ConnectionConfig {
        connection_name: Some(name.to_owned()),
        // Reconnect soon after the node is back.
        recovery: Recovery {
            max_backoff: Duration::from_millis(500),
            ..Recovery::default()
        },
        ..ConnectionConfig::from_uri(&node.url()).expect("node URL")
    };
    let spec = Spec {
        messages: 20_000,
        producers: 2,
        consumers: 2,
        prefetch: 500,
        body_size: 16,
        persistent: true,
        queue: unique("restart"),
        queue_arguments: Default::default(),
        producer: config(&unique("restart-producer")),
        consumer: config(&unique("restart-consumer")),
        drain_timeout: Duration::from_secs(60),
        rate: Some(2_000),
    };
    let restarts = Arc::new(AtomicUsize::new(0));
    let control = node.control();
    let faults = {
        let restarts = restarts.clone();
        move |p: Arc<Progress>| async move {
            while p.confirmed() < p.messages() / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let started = Instant::now();
            tokio::task::spawn_blocking(move || control.restart())
                .await
                .expect("restart task");
            println!("private node restarted in {:?}", started.elapsed());
            restarts.fetch_add(1, Ordering::SeqCst);
        }
    };
    let report = at_least_once::run(spec, faults).await;
    println!("broker restart: {report}");
    assert_eq!(restarts.load(Ordering::SeqCst), 1);
    assert_eq!(report.confirmed, report.messages, "{report}");
    assert_eq!(report.lost, 0, "confirmed messages were lost: {report}");
    assert_eq!(report.corrupt, 0, "{report}");
    assert_eq!(report.failures, 0, "{report}");
    assert!(
        report.recoveries >= 2,
        "both connections recovered: {report}"
    );
    drop(node);
}
