//! Accepting connections: one shared port, header timeouts, and the drain.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::Request, response::Response};
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
        let served = Served {
            http: http_builder(config.header_timeout),
            drain: Drain::default(),
            router: self.router(),
        };
        let addr = listener.local_addr().ok();
        info!(node_id = %api.node_id(), addr = ?addr, "web server listening");
        let cancel = self.drain_trigger();
        let drained = self.shared.drained.clone();
        let _drained = drained.drop_guard();
        self.accept_until(&listener, &served, cancel.cancelled())
            .await;
        info!(node_id = %api.node_id(), drain_delay_ms = config.drain_delay.as_millis() as u64, "web server draining");
        self.accept_until(&listener, &served, tokio::time::sleep(config.drain_delay))
            .await;
        drop(listener);
        served
            .drain
            .send_keep_alive_away(config.drain_timeout.min(KEEP_ALIVE_GRACE))
            .await;
        self.close_the_rest(&served.drain).await;
        Ok(())
    }

    /// The token that starts the drain: cancelled by `Web::stop` or, failing that, by the
    /// node's own stop.
    fn drain_trigger(&self) -> CancellationToken {
        let api = &self.shared.services.api;
        let cancel = self.shared.stop.clone();
        let node_stop = api.cancellation_token();
        let web_stop = cancel.clone();
        api.spawn(async move {
            tokio::select! {
                () = node_stop.cancelled() => web_stop.cancel(),
                () = web_stop.cancelled() => {}
            }
        });
        cancel
    }

    /// Accepts connections on `listener` until `until` completes.
    async fn accept_until(
        &self,
        listener: &TcpListener,
        served: &Served,
        until: impl Future<Output = ()>,
    ) {
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => break,
                accepted = listener.accept() => self.accept(accepted, served).await,
            }
        }
    }

    /// Closes the connections still open (idle keep-alive ones at once, busy ones after their
    /// request) and every WebSocket (close 1001), and waits for them up to the drain timeout.
    async fn close_the_rest(&self, drain: &Drain) {
        let api = &self.shared.services.api;
        let drain_timeout = self.shared.config.drain_timeout;
        let ws_tasks = self.shared.ws_tasks.clone();
        ws_tasks.close();
        drain.start.cancel();
        let drained = async {
            drain.connections.wait().await;
            ws_tasks.wait().await;
        };
        match tokio::time::timeout(drain_timeout, drained).await {
            Ok(()) => info!(node_id = %api.node_id(), "web server drained"),
            Err(_) => {
                warn!(node_id = %api.node_id(), timeout_ms = drain_timeout.as_millis() as u64, "web drain deadline passed")
            }
        }
    }

    /// Serves one accepted connection on the drain's tracker, until it ends or the drain closes
    /// it.
    async fn accept(&self, accepted: io::Result<(TcpStream, SocketAddr)>, served: &Served) {
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => return back_off(&err).await,
        };
        bump(&self.shared.counters.http_connections);
        let (router, closing) = (served.router.clone(), served.drain.closing.clone());
        let service = hyper::service::service_fn(move |request| {
            respond(router.clone(), closing.clone(), peer, request)
        });
        let connection = served
            .http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let counters = self.shared.counters.clone();
        let start = served.drain.start.clone();
        served.drain.connections.spawn(async move {
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

/// Logs a failed accept and pauses a little before the next one.
async fn back_off(err: &io::Error) {
    // Out of descriptors or a connection reset before accept: keep serving others.
    warn!(cause = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// HTTP/1 with keep-alive and a deadline for the request headers.
fn http_builder(header_timeout: Duration) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    http
}

/// Routes one request from `peer`; once the drain has begun, the response asks the client to
/// close the connection.
async fn respond(
    router: Router,
    closing: Arc<AtomicBool>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response, Infallible> {
    request.extensions_mut().insert(Peer(peer));
    let mut response = router.oneshot(request).await?;
    if closing.load(Ordering::SeqCst) {
        // The client opens its next connection elsewhere (another worker).
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

/// What every connection of one [`Web::serve`] shares.
#[derive(Debug)]
struct Served {
    http: http1::Builder,
    drain: Drain,
    router: Router,
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

impl Drain {
    /// Tells keep-alive clients to go (`connection: close` on their next response) and gives
    /// them `grace` to do so.
    async fn send_keep_alive_away(&self, grace: Duration) {
        // Closing an idle keep-alive connection races with a request the client may be
        // sending on it, which would fail; those that say nothing are closed after the grace.
        self.closing.store(true, Ordering::SeqCst);
        self.connections.close();
        let _ = tokio::time::timeout(grace, self.connections.wait()).await;
    }
}
