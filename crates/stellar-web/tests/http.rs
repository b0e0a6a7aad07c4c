//! Actions over HTTP: statuses, headers, limits, health and the drain.

mod support;

use std::{sync::Arc, time::Duration};

use serde_json::json;
use stellar_web::{Readiness, WebConfig, always_ready};
use support::{Cluster, http};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn status_answers_with_node_and_request_ids() {
    let node = Cluster::new().node("web-1").await;
    let response = http(node.addr, "GET", "/api/status", &[], b"").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body["node_id"], "web-1");
    assert_eq!(response.body["state"], "ready");
    assert_eq!(response.body["nodes"], json!(["web-1"]));
    assert_eq!(response.header("x-node-id"), Some("web-1"));
    assert!(
        response
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
    let text = response.body.to_string();
    assert!(
        !text.contains("change-me") && !text.contains("token"),
        "{text}"
    );

    let response = http(
        node.addr,
        "GET",
        "/api/status",
        &[("x-request-id", "req-42")],
        b"",
    )
    .await;
    assert_eq!(response.header("x-request-id"), Some("req-42"));
    // An id that would forge log fields (spaces, `=`) or bloat every log line is replaced.
    let long = "x".repeat(65);
    for forged in ["abc node_id=evil", long.as_str()] {
        let response = http(
            node.addr,
            "GET",
            "/api/status",
            &[("x-request-id", forged)],
            b"",
        )
        .await;
        let id = response.header("x-request-id").expect("an id");
        assert_ne!(id, forged);
        assert!(id.len() <= 64 && !id.contains(' '), "{id}");
    }
}

#[tokio::test]
async fn inputs_come_from_the_query_string_or_a_json_body() {
    let node = Cluster::new().node("web-1").await;
    let response = http(node.addr, "GET", "/api/echo?name=ann&count=3", &[], b"").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.body,
        json!({"name": "ann", "count": 3, "connection": null})
    );
    let response = http(node.addr, "POST", "/api/echo", &[], br#"{"name":"bob"}"#).await;
    assert_eq!(response.body["name"], "bob");
}

#[tokio::test]
async fn documentation_lists_every_action_with_its_inputs() {
    let node = Cluster::new().node("web-1").await;
    let response = http(node.addr, "GET", "/api/documentation", &[], b"").await;
    let actions = response.body["actions"]
        .as_array()
        .expect("actions")
        .clone();
    let echo = actions
        .iter()
        .find(|a| a["name"] == "echo")
        .expect("echo listed");
    assert_eq!(echo["description"], "Echoes its input");
    assert_eq!(
        echo["inputs"],
        json!([
            {"name": "name", "required": true, "description": "a name"},
            {"name": "count", "required": false, "description": "a number"}
        ])
    );
    for builtin in [
        "status",
        "documentation",
        "room.join",
        "room.say",
        "room.members",
    ] {
        assert!(actions.iter().any(|a| a["name"] == builtin), "{builtin}");
    }
}

#[tokio::test]
async fn every_failure_has_its_status_and_a_json_error() {
    let config = WebConfig::default()
        .with_body_limit(1024)
        .with_request_timeout(Duration::from_millis(300));
    let node = Cluster::new()
        .node_with("web-1", config, always_ready(), true)
        .await;
    let addr = node.addr;
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/api/echo",
            b"{\"name\":".to_vec(),
            400,
            "malformed_json",
        ),
        ("GET", "/api/nope", vec![], 404, "unknown_action"),
        ("GET", "/nowhere", vec![], 404, "not_found"),
        ("PUT", "/api/echo", vec![], 405, "method_not_allowed"),
        ("POST", "/api/echo", vec![b' '; 4096], 413, "body_too_large"),
        (
            "POST",
            "/api/echo",
            b"{\"count\":1}".to_vec(),
            422,
            "invalid_input",
        ),
        ("GET", "/api/fail", vec![], 500, "server_error"),
        ("GET", "/api/panic", vec![], 500, "server_error"),
        ("GET", "/api/slow?ms=2000", vec![], 504, "timeout"),
    ];
    for (method, path, body, status, code) in cases {
        let response = http(addr, method, path, &[], &body).await;
        assert_eq!(response.status, status, "{method} {path}: {response:?}");
        assert_eq!(response.body["error"]["code"], code, "{method} {path}");
        assert_eq!(response.header("x-node-id"), Some("web-1"));
        assert!(response.header("x-request-id").is_some());
    }
    let invalid = http(addr, "POST", "/api/echo", &[], br#"{"name":7}"#).await;
    assert_eq!(invalid.body["error"]["field"], "name");
    let missing = http(addr, "POST", "/api/echo", &[], b"{}").await;
    assert_eq!(missing.body["error"]["field"], "name");
    let failed = http(addr, "GET", "/api/fail", &[], b"").await;
    assert_eq!(failed.body["error"]["message"], "internal error");
    let stats = node.web.stats();
    assert!(stats.malformed_json >= 1, "{stats:?}");
    assert!(stats.unknown_action >= 1, "{stats:?}");
    assert!(stats.body_too_large >= 1, "{stats:?}");
    assert!(stats.invalid_input >= 3, "{stats:?}");
    assert!(stats.handler_failures >= 3, "{stats:?}");
    assert!(stats.timeouts >= 1, "{stats:?}");
    // Still serving.
    let response = http(addr, "GET", "/api/status", &[], b"").await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_node_and_its_backend() {
    let cluster = Cluster::new();
    let node = cluster
        .node_with("web-1", WebConfig::default(), always_ready(), false)
        .await;
    assert_eq!(
        http(node.addr, "GET", "/healthz", &[], b"").await.status,
        200
    );
    let starting = http(node.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(starting.status, 503);
    assert_eq!(starting.body["error"]["code"], "not_ready");
    node.api.set_ready();
    assert_eq!(
        http(node.addr, "GET", "/readyz", &[], b"").await.status,
        200
    );

    let down: Readiness =
        Arc::new(|| Box::pin(async { Err("redis://:secret@db refused".to_owned()) }));
    let node = cluster
        .node_with("web-2", WebConfig::default(), down, true)
        .await;
    let response = http(node.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(response.status, 503);
    assert!(!response.body.to_string().contains("secret"));
}

#[tokio::test]
async fn a_draining_node_reports_503_and_finishes_requests_in_flight() {
    let config = WebConfig::default().with_drain_delay(Duration::from_millis(600));
    let node = Cluster::new()
        .node_with("web-1", config, always_ready(), true)
        .await;
    let addr = node.addr;
    let in_flight =
        tokio::spawn(async move { http(addr, "GET", "/api/slow?ms=400", &[], b"").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let api = node.api.clone();
    let shutdown = tokio::spawn(async move { api.shutdown().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let readyz = http(addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(readyz.status, 503);
    assert_eq!(readyz.body["error"]["code"], "shutting_down");
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").await.status, 200);
    let finished = in_flight.await.expect("request task");
    assert_eq!(finished.status, 200, "{finished:?}");
    shutdown
        .await
        .expect("shutdown task")
        .expect("clean shutdown");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_close_when_the_node_drains() {
    let node = Cluster::new().node("web-1").await;
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    node.api.shutdown().await.expect("clean shutdown");
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("closed, not hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle keep-alive connection was closed");
}

#[tokio::test]
async fn a_client_slow_to_send_headers_is_cut_off() {
    let config = WebConfig::default().with_header_timeout(Duration::from_millis(300));
    let node = Cluster::new()
        .node_with("web-1", config, always_ready(), true)
        .await;
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let mut buf = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("cut off, not hanging");
    // hyper may answer 408 before closing; either way the connection ends.
    if let Ok(n) = read
        && n > 0
    {
        let rest = stream.read(&mut buf).await.unwrap_or(0);
        assert_eq!(rest, 0);
    }
    // Others are still served.
    assert_eq!(
        http(node.addr, "GET", "/healthz", &[], b"").await.status,
        200
    );
}
