//! Accepting connections: one shared port, header timeouts, and the drain.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

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
        // The drain starts on `Web::stop` or, failing that, on the node's own stop.
        let cancel = self.shared.stop.clone();
        let node_stop = api.cancellation_token();
        let web_stop = cancel.clone();
        api.spawn(async move {
            tokio::select! {
                () = node_stop.cancelled() => web_stop.cancel(),
                () = web_stop.cancelled() => {}
            }
        });
        let drained = self.shared.drained.clone();
        let _drained = drained.drop_guard();
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
        // Keep-alive clients are told to go (`connection: close` on their next response) and
        // given a moment to do so: closing an idle keep-alive connection races with a request
        // the client may be sending on it, which would fail. Those that say nothing are closed
        // after the grace.
        graceful.closing.store(true, Ordering::SeqCst);
        graceful.connections.close();
        let grace = config.drain_timeout.min(KEEP_ALIVE_GRACE);
        let _ = tokio::time::timeout(grace, graceful.connections.wait()).await;
        let ws_tasks = self.shared.ws_tasks.clone();
        ws_tasks.close();
        graceful.start.cancel();
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
        let closing = graceful.closing.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            let closing = closing.clone();
            let response = router.clone().oneshot(request);
            async move {
                let mut response = response.await?;
                if closing.load(Ordering::SeqCst) {
                    // The client opens its next connection elsewhere (another worker).
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
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

/// How long a draining node lets keep-alive clients leave by themselves before it closes their
/// connections.
const KEEP_ALIVE_GRACE: Duration = Duration::from_secs(2);

/// The HTTP connections being served, and the signals that drain them.
#[derive(Debug, Default)]
struct Drain {
    /// Responses carry `connection: close` from now on.
    closing: Arc<AtomicBool>,
    /// Closes what is left: idle connections at once, busy ones after their request.
    start: CancellationToken,
    connections: TaskTracker,
}
