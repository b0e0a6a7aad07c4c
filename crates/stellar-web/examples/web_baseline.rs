//! The baseline of `cargo xtask bench`'s web figures: a bare hyper server answering every request
//! with the same bytes (a file's content, e.g. a node's `/api/documentation` response), with no
//! routing, no middleware, no JSON. It prints `listening ADDR` once bound.
//!
//! ```text
//! cargo run --release -p stellar-web --example web_baseline -- BODY_FILE
//! ```

use std::{convert::Infallible, sync::Arc};

use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: web_baseline BODY_FILE")?;
    let body: Arc<[u8]> = std::fs::read(path)?.into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from(body.to_vec()))
                            .expect("a valid response"),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
