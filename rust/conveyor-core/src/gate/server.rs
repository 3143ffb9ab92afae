//! Serving connections: the limits that keep slow, idle or too many clients
//! from starving the gate. `axum::serve` has none of them, so the gate runs
//! its own accept loop over hyper.
//!
//! - **At most `max_connections` at once.** One more is answered 503 with
//!   `Retry-After` and closed at once, so a flood of connections costs the
//!   gate a file descriptor for a moment, never a request in flight.
//! - **Headers within `header_timeout`**, counted from when the connection
//!   is ready for a request: a client that trickles its headers (slowloris)
//!   or leaves a kept-alive connection idle is closed then.
//! - **A body within `body_timeout`** (enforced where bodies are read,
//!   `requests::read_body`): 408 after it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::https::Https;
use tokio::sync::{oneshot, Semaphore};

/// How many connections the gate serves at once and how long it waits for
/// each part of a request.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; the next is answered 503 and closed.
    pub max_connections: usize,
    /// Longest wait for a request's complete headers, idle keep-alive time
    /// included.
    pub header_timeout: Duration,
    /// Longest wait for a request's complete body.
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The answer to a connection over the cap: written whole, then closed.
fn over_capacity() -> Vec<u8> {
    let body =
        "{\"error\":\"too many connections to the gate; retry\",\"code\":\"over_capacity\"}\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Longest the gate spends writing `OVER_CAPACITY` to a client that will not read.
const OVER_CAPACITY_WRITE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` under `limits` until `shutdown` fires, then
/// waits for requests in flight to finish.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    https: Option<Arc<Https>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or a connection reset before accept:
            // pause a moment rather than spin, and keep serving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(OVER_CAPACITY_WRITE, async {
                    let _ = stream.write_all(&over_capacity()).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let service = TowerToHyperService::new(app.clone());
        let Some(https) = &https else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = connection.await;
                drop(slot);
            });
            continue;
        };
        // The handshake counts against the header deadline: a client that
        // opens a connection and says nothing is closed at the same time.
        let acceptor = TlsAcceptor::from(https.current());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
            if let Ok(Ok(tls)) = handshake.await {
                let _ = watcher
                    .watch(http.serve_connection(TokioIo::new(tls), service))
                    .await;
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
}
