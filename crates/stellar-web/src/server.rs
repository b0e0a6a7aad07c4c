//! Accepting connections: one shared port, header timeouts, and the drain.

use std::{io, net::SocketAddr, time::Duration};

use axum::{Router, extract::Request};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::{Web, stats::bump, ws::Peer};

/// Binds a listener on `addr`. With `reuse_port`, sets `SO_REUSEPORT` so that several processes
/// (the workers of `stellar run --cluster N`) listen on one port and the kernel spreads
/// connections between them. Must be called inside a Tokio runtime.
///
/// # Errors
///
/// Fails if the socket cannot be made, configured, bound or put in listening mode.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

impl Web {
    /// Serves [`Web::router`] on `listener` until the node's cancellation token is cancelled,
    /// then drains: keeps accepting for [`crate::WebConfig::drain_delay`] (with `/readyz` at
    /// 503), closes the listener, lets requests in flight finish while idle keep-alive
    /// connections close, sends every WebSocket a close frame 1001 (going away), and returns
    /// once all are done or after [`crate::WebConfig::drain_timeout`].
    ///
    /// Spawn it with `api.spawn`, so the node's shutdown waits for the drain.
    ///
    /// # Errors
    ///
    /// None today: accept errors (such as running out of file descriptors) are logged and
    /// retried. The `Result` leaves room for fatal listener errors.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        let api = self.shared.services.api.clone();
        let config = self.shared.config.clone();
        let router = self.router();
        let graceful = Drain::default();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true);
        let addr = listener.local_addr().ok();
        info!(node_id = %api.node_id(), addr = ?addr, "web server listening");
        let cancel = api.cancellation_token();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => self.accept(accepted, &http, &graceful, &router).await,
            }
        }
        info!(node_id = %api.node_id(), drain_delay_ms = config.drain_delay.as_millis() as u64, "web server draining");
        let delay = tokio::time::sleep(config.drain_delay);
        tokio::pin!(delay);
        loop {
            tokio::select! {
                () = &mut delay => break,
                accepted = listener.accept() => self.accept(accepted, &http, &graceful, &router).await,
            }
        }
        drop(listener);
        let ws_tasks = self.shared.ws_tasks.clone();
        ws_tasks.close();
        graceful.start.cancel();
        graceful.connections.close();
        let drained = async {
            graceful.connections.wait().await;
            ws_tasks.wait().await;
        };
        match tokio::time::timeout(config.drain_timeout, drained).await {
            Ok(()) => info!(node_id = %api.node_id(), "web server drained"),
            Err(_) => {
                warn!(node_id = %api.node_id(), timeout_ms = config.drain_timeout.as_millis() as u64, "web drain deadline passed")
            }
        }
        Ok(())
    }

    async fn accept(
        &self,
        accepted: io::Result<(TcpStream, SocketAddr)>,
        http: &http1::Builder,
        graceful: &Drain,
        router: &Router,
    ) {
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors or a connection reset before accept: keep serving others.
                warn!(cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        bump(&self.shared.counters.http_connections);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            router.clone().oneshot(request)
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let counters = self.shared.counters.clone();
        let start = graceful.start.clone();
        graceful.connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = start.cancelled() => {
                    // Finishes the request in flight, closes an idle keep-alive connection.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                bump(&counters.http_connection_errors);
                debug!(cause = %err, %peer, "http connection ended with an error");
            }
        });
    }
}

/// The HTTP connections being served, and the signal that starts draining them.
#[derive(Debug, Default)]
struct Drain {
    start: CancellationToken,
    connections: TaskTracker,
}
