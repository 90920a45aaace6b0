//! RPC: a server and a client over direct reply-to, with a timeout and an unroutable call.
//!
//! `cargo run -p messaging-patterns --example rpc` (RabbitMQ at `AMQP_URL`).

use std::time::Duration;

use messaging_patterns::codec::Json;
use messaging_patterns::rpc::{RpcClient, RpcClientOptions, RpcServer, RpcServerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let conn = amqp_client::Connection::connect(&url).await?;
    let server_options = RpcServerOptions {
        prefix: "example.".into(),
        concurrency: 8,
        ..Default::default()
    };
    let server = RpcServer::serve(
        &conn,
        "fib",
        Json::<u32>::new(),
        Json::<u64>::new(),
        server_options,
        |request| async move {
            let n = request.payload;
            if n > 90 {
                return Err(format!("{n} is too large"));
            }
            let (mut a, mut b) = (0u64, 1u64);
            for _ in 0..n {
                (a, b) = (b, a + b);
            }
            Ok(a)
        },
    )
    .await?;

    let client_options = RpcClientOptions {
        prefix: "example.".into(),
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let client = RpcClient::new(
        &conn,
        Json::<u32>::new(),
        Json::<u64>::new(),
        client_options,
    )
    .await?;
    let calls = (10..20).map(|n| {
        let client = client.clone();
        async move { (n, client.call("fib", &n).await) }
    });
    for (n, result) in futures_util::future::join_all(calls).await {
        println!("fib({n}) = {}", result?);
    }
    println!("fib(100): {}", client.call("fib", &100).await.unwrap_err());
    println!(
        "unknown: {}",
        client.call("no-such-service", &1).await.unwrap_err()
    );

    let queue = server.queue().to_owned();
    server.shutdown().await?;
    let channel = conn.open_channel().await?;
    channel.queue_delete(&queue, Default::default()).await?;
    conn.close().await?;
    Ok(())
}
