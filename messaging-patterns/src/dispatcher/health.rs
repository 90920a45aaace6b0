//! `/livez` and `/readyz` over HTTP/1.x (`--http ADDR`), for orchestrators' probes.
//!
//! ```text
//! GET /livez    200 "ok" while the process serves requests
//! GET /readyz   200 "ready" when connected, not blocked by the broker, and every consumer
//!               registered; 503 with the reason otherwise
//! ```

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqp_client::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::consumer::is_ready;

/// The longest a probe may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request read.
const MAX_REQUEST: usize = 8192;

/// What `/readyz` looks at; shared between the dispatcher and the HTTP server.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    connection: Option<Connection>,
    expected: usize,
    pools: Vec<(String, Arc<AtomicBool>)>,
}

impl Health {
    pub(crate) fn connected(&self, connection: &Connection, consumers: usize) {
        if let Ok(mut state) = self.inner.lock() {
            state.connection = Some(connection.clone());
            state.expected = consumers;
        }
    }

    pub(crate) fn consuming(&self, name: &str, ready: Arc<AtomicBool>) {
        if let Ok(mut state) = self.inner.lock() {
            state.pools.push((name.to_owned(), ready));
        }
    }

    /// `Ok` when ready to work; why not otherwise.
    ///
    /// # Errors
    /// The reason: not connected, the connection closed or blocked, a consumer not
    /// registered.
    pub fn ready(&self) -> Result<(), String> {
        let state = self
            .inner
            .lock()
            .map_err(|_| "health state poisoned".to_owned())?;
        let Some(connection) = &state.connection else {
            return Err("not connected".to_owned());
        };
        if connection.is_closed() {
            return Err("connection closed".to_owned());
        }
        if connection.is_blocked() {
            return Err("the broker blocks publishing (resource alarm)".to_owned());
        }
        if state.pools.len() < state.expected {
            return Err(format!(
                "{} of {} consumers started",
                state.pools.len(),
                state.expected
            ));
        }
        match state.pools.iter().find(|(_, ready)| !is_ready(ready)) {
            Some((name, _)) => Err(format!("consumer {name} is not registered")),
            None => Ok(()),
        }
    }
}

/// Answers probes on `listener` until the future is dropped.
pub async fn serve_http(listener: TcpListener, health: Health) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a health probe");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &health).await {
                tracing::debug!(error = %e, "answering a health probe");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, health: &Health) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let (status, body) = route(&request, health);
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn route(request: &[u8], health: &Health) -> (&'static str, String) {
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    match (method, path) {
        (Some(b"GET" | b"HEAD"), Some(b"/livez")) => ("200 OK", "ok\n".to_owned()),
        (Some(b"GET" | b"HEAD"), Some(b"/readyz")) => match health.ready() {
            Ok(()) => ("200 OK", "ready\n".to_owned()),
            Err(reason) => ("503 Service Unavailable", format!("{reason}\n")),
        },
        _ => ("404 Not Found", "not found\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let health = Health::default();
        assert_eq!(route(b"GET /livez HTTP/1.1\r\n\r\n", &health).0, "200 OK");
        let (status, body) = route(b"GET /readyz HTTP/1.1\r\n\r\n", &health);
        assert_eq!(
            (status, body.as_str()),
            ("503 Service Unavailable", "not connected\n")
        );
        assert_eq!(
            route(b"GET /other HTTP/1.1\r\n\r\n", &health).0,
            "404 Not Found"
        );
    }
}
