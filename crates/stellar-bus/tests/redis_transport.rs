//! Redis-only behaviour: reconnects, start-up failures, URL handling, server-side unsubscribe.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use stellar_bus::{
    RawSubscription, RedisConfig, RedisPool, RedisTransport, Transport, TransportError,
};
use stellar_core::CancellationToken;
use stellar_testkit::RedisServer;

async fn connect(url: &str) -> (RedisPool, RedisTransport, CancellationToken) {
    let cancel = CancellationToken::new();
    let pool = RedisPool::connect(RedisConfig::new(url))
        .await
        .expect("connect to the test redis");
    let transport = RedisTransport::connect(pool.clone(), cancel.clone())
        .await
        .expect("subscriber connects");
    (pool, transport, cancel)
}

/// Publishes `payload` every 100 ms until `sub` receives it, or panics after `within`.
async fn publish_until_received(
    publisher: &RedisTransport,
    sub: &mut RawSubscription,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        assert!(
            Instant::now() < deadline,
            "no message on {} within {within:?}",
            sub.channel()
        );
        // Publishing fails while the pool reconnects; keep trying.
        let _ = publisher.publish(sub.channel(), b"ping".to_vec()).await;
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(100), sub.recv()).await
        {
            assert_eq!(message, b"ping");
            return;
        }
    }
}

/// Captures log output of the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test]
async fn messages_flow_again_after_redis_is_killed_and_restarted() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut server = RedisServer::start();
    let (_pool, transport, _cancel) = connect(&server.url()).await;
    let mut sub = transport.subscribe("survives").await.expect("subscribe");
    publish_until_received(&transport, &mut sub, Duration::from_secs(5)).await;

    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        transport
            .publish("survives", b"lost".to_vec())
            .await
            .is_err(),
        "publish must fail while redis is down"
    );
    server.restart();

    // The subscription made before the restart delivers again: it was re-subscribed.
    publish_until_received(&transport, &mut sub, Duration::from_secs(15)).await;
    let text = logs.text();
    assert!(text.contains("redis subscriber connection lost"), "{text}");
    assert!(text.contains("redis subscriber reconnected"), "{text}");
    assert!(text.contains("re-subscribed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_redis_is_down_completes_once_it_returns() {
    let mut server = RedisServer::start();
    let cancel = CancellationToken::new();
    let config = RedisConfig::new(server.url()).with_op_timeout(Duration::from_secs(10));
    let pool = RedisPool::connect(config).await.expect("connect");
    let transport = RedisTransport::connect(pool, cancel.clone())
        .await
        .expect("subscriber connects");
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pending = tokio::spawn({
        let transport = transport.clone();
        async move { transport.subscribe("later").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let mut sub = pending
        .await
        .expect("task ran")
        .expect("subscribe confirmed after the restart");
    publish_until_received(&transport, &mut sub, Duration::from_secs(10)).await;
    cancel.cancel();
}

#[tokio::test]
async fn unreachable_redis_fails_fast_and_names_the_url_without_its_password() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
    let started = Instant::now();
    let err = RedisPool::connect(RedisConfig::new(&url))
        .await
        .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        !message.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_and_tls_urls_are_rejected_with_a_reason() {
    for url in ["redis://[::1", "rediss://:secret@127.0.0.1:6380"] {
        let err = RedisPool::connect(RedisConfig::new(url))
            .await
            .expect_err("invalid url");
        assert!(
            matches!(err, TransportError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let err = RedisPool::connect(RedisConfig::new("rediss://127.0.0.1"))
        .await
        .expect_err("tls");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test]
async fn credentials_and_database_from_the_url_are_used() {
    let server = RedisServer::start_with_args(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", server.port());
    let (pool, transport, _cancel) = connect(&url).await;
    let mut sub = transport
        .subscribe("authed")
        .await
        .expect("subscribe with auth");
    publish_until_received(&transport, &mut sub, Duration::from_secs(5)).await;
    let () = pool
        .query("SET", redis::cmd("SET").arg("k").arg("v"))
        .await
        .expect("set");
    let db: String = pool
        .query("CLIENT INFO", redis::cmd("CLIENT").arg("INFO"))
        .await
        .expect("client info");
    assert!(db.contains(" db=3 "), "{db}");

    let wrong = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = RedisPool::connect(RedisConfig::new(wrong))
        .await
        .expect_err("bad password");
    assert!(!err.to_string().contains("wrong"), "{err}");
}

/// A base64-like password with every character a URL reserves.
const AWKWARD_PASSWORD: &str = "a/b?c#d+e@f:g==";
/// [`AWKWARD_PASSWORD`] percent-encoded, as redis-rs decodes it.
const AWKWARD_ENCODED: &str = "a%2Fb%3Fc%23d%2Be%40f%3Ag%3D%3D";

#[tokio::test]
async fn a_password_with_reserved_characters_connects_encoded_and_never_shows() {
    let socket = std::env::temp_dir().join(format!("stellar-awkward-{}.sock", std::process::id()));
    let socket_arg = socket.display().to_string();
    let server = RedisServer::start_with_args(&[
        "--requirepass",
        AWKWARD_PASSWORD,
        "--unixsocket",
        &socket_arg,
    ]);
    let tcp = format!("redis://:{AWKWARD_ENCODED}@127.0.0.1:{}/0", server.port());
    let unix = format!("unix://{socket_arg}?pass={AWKWARD_ENCODED}");
    for url in [&tcp, &unix] {
        let pool = RedisPool::connect(RedisConfig::new(url.as_str()))
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", stellar_core::redact_url(url)));
        let shown = format!("{} {:?} {pool:?}", pool.redacted_url(), pool.config());
        for secret in [AWKWARD_PASSWORD, AWKWARD_ENCODED, "c#d", "c%23d"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
    // Unencoded, the URL cannot be read as meant: refused, and the password still never shows.
    let raw = format!("redis://:{AWKWARD_PASSWORD}@127.0.0.1:{}/0", server.port());
    let err = RedisPool::connect(RedisConfig::new(raw))
        .await
        .expect_err("an unencoded password does not authenticate");
    let shown = format!("{err} {err:?}");
    for secret in [AWKWARD_PASSWORD, "c#d", "b?c"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let _ = std::fs::remove_file(&socket);
}

#[tokio::test]
async fn dropping_every_local_subscription_unsubscribes_in_redis() {
    let server = RedisServer::start();
    let (pool, transport, _cancel) = connect(&server.url()).await;
    let numsub = || async {
        let reply: (String, u64) = pool
            .query("PUBSUB", redis::cmd("PUBSUB").arg("NUMSUB").arg("gone"))
            .await
            .expect("numsub");
        reply.1
    };
    let a = transport.subscribe("gone").await.expect("subscribe");
    let b = transport.subscribe("gone").await.expect("subscribe");
    assert_eq!(
        numsub().await,
        1,
        "one redis subscription serves every local one"
    );
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(numsub().await, 1);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while numsub().await != 0 {
        assert!(Instant::now() < deadline, "UNSUBSCRIBE never reached redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cancelling_the_transport_ends_its_subscriptions() {
    let server = RedisServer::start();
    let (_pool, transport, cancel) = connect(&server.url()).await;
    let mut sub = transport.subscribe("ends").await.expect("subscribe");
    let stopped = transport.stopped();
    let still_running = tokio::time::timeout(Duration::from_millis(100), transport.stopped()).await;
    assert!(
        still_running.is_err(),
        "the subscriber task ended before it was cancelled"
    );
    cancel.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("ends promptly");
    assert_eq!(end, None);
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the subscriber task ends once cancelled");
}
