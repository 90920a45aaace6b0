//! A user's `Connector` opens every connection's byte stream, the reconnections of a
//! recovery included.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use amqp_client::{
    Connecting, Connection, ConnectionConfig, ConnectionEvent, Connector, Endpoint, TcpConnector,
};
use amqp_tests::proxy::Proxy;
use amqp_tests::{config, exclusive, unique};

/// TCP, counting its calls.
#[derive(Debug, Default)]
struct Counting(Arc<AtomicUsize>);

impl Connector for Counting {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> Connecting<'a> {
        self.0.fetch_add(1, Ordering::SeqCst);
        TcpConnector.connect(endpoint)
    }
}

#[tokio::test]
async fn recovery_reconnects_through_the_connector() {
    let proxy = Proxy::to_broker().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let config = ConnectionConfig {
        endpoints: vec![proxy.endpoint()],
        connection_name: Some(unique("connector")),
        connector: Arc::new(Counting(calls.clone())),
        ..config()
    };
    let conn = Connection::connect_with(config).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut events = conn.events();
    // Every attempt is announced with `Reconnecting` and must go through the connector.
    let mut attempts = 1;
    for _ in 0..2 {
        assert!(proxy.cut() > 0, "the proxy had no connection to cut");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("an event within 20 s")
                .expect("events open");
            match event {
                ConnectionEvent::Reconnecting { .. } => attempts += 1,
                ConnectionEvent::Recovered { .. } => break,
                ConnectionEvent::Failed { error } => panic!("recovery failed: {error}"),
                _ => {}
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), attempts);
    }
    assert!(attempts >= 3, "two recoveries, {attempts} attempts");
    let ch = conn.open_channel().await.unwrap();
    ch.queue_declare(&unique("connector-after"), exclusive())
        .await
        .expect("the recovered connection works");
    conn.close().await.unwrap();
}
