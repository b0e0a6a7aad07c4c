//! One trace across the cluster: an HTTP call on node A enqueues a task that node B runs, and the
//! task calls an RPC method on node A. Every span of that work, on both nodes, is exported (to an
//! in-process exporter) under the trace id of the caller's `traceparent`, parented in causal
//! order, and every log line written inside it names that `trace_id`.
//!
//! The test installs a process-wide subscriber, so it stays the only test of this binary.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use stellar_core::{Config, NodeId, ServerToken, TraceParent};
use stellar_node::{Action, ActionError, Node};
use stellar_rpc::Rpc;
use stellar_tasks::{EnqueueOptions, TaskDefinition, TaskState};
use stellar_testkit::{RedisServer, eventually_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// The caller's trace: its id is what every span and log line must carry.
const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// Log lines, as the fmt layer writes them.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lines").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn containing(&self, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().expect("lines").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The subscriber the `stellar` binary installs, with an in-memory exporter instead of OTLP.
fn install() -> (InMemorySpanExporter, Lines) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();
    (exporter, lines)
}

fn config(id: &str, redis_url: &str, concurrency: usize) -> Config {
    Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new("trace-test-token"),
        redis_url: Some(redis_url.to_owned()),
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        task_concurrency: concurrency,
        shutdown_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

/// `traced.work`: logs, then calls `traced.ping` on node A through `rpc` (node B's).
fn work(rpc: Arc<OnceLock<Rpc>>) -> TaskDefinition {
    TaskDefinition::new("traced.work", move |_ctx, _args: serde_json::Value| {
        let rpc = rpc.clone();
        async move {
            tracing::info!("traced work ran");
            let rpc = rpc.get().ok_or("node B's RPC is not set yet")?;
            let a = NodeId::new("trace-a").expect("id");
            rpc.call(&a, "traced.ping", serde_json::json!({})).await?;
            Ok(())
        }
    })
}

/// `traced.start`: enqueues `traced.work` and answers with its id.
fn start_action() -> Action {
    Action::new(
        "traced.start",
        |ctx, _input: serde_json::Value| async move {
            let tasks = &ctx.services().tasks;
            tracing::info!("enqueueing traced work");
            tasks
                .enqueue("traced.work", &(), EnqueueOptions::default())
                .await
                .map_err(|err| ActionError::failed(err.to_string()))
        },
    )
}

/// POSTs to `/api/traced.start` with the caller's `traceparent`; the JSON body.
async fn call_start(addr: std::net::SocketAddr) -> serde_json::Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /api/traced.start HTTP/1.1\r\nHost: {addr}\r\ntraceparent: {CALLER}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).expect("a JSON body")
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The one span named `name` whose `key` attribute is `value`.
fn one<'a>(spans: &'a [SpanData], name: &str, key: &str, value: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && attribute(s, key).as_deref() == Some(value))
        .collect();
    assert_eq!(found.len(), 1, "{name} with {key}={value}: {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http_call_that_enqueues_a_task_run_on_another_node_is_one_trace() {
    let (exporter, lines) = install();
    let redis = RedisServer::start();
    let b_rpc = Arc::new(OnceLock::new());
    let a = Node::builder(config("trace-a", &redis.url(), 0))
        .task(work(b_rpc.clone()))
        .action(start_action())
        .start()
        .await
        .expect("node A starts");
    a.rpc()
        .register("traced.ping", |_ctx, _args: serde_json::Value| async {
            tracing::info!("traced ping served");
            Ok::<_, stellar_bus::HandlerError>(serde_json::json!("pong"))
        });
    let b = Node::builder(config("trace-b", &redis.url(), 4))
        .task(work(b_rpc.clone()))
        .start()
        .await
        .expect("node B starts");
    b_rpc.set(b.rpc().clone()).expect("set once");

    let id = call_start(a.http_addr().expect("A serves HTTP")).await;
    let id = id.as_str().expect("a task id").to_owned();
    eventually_async("the task completes on node B", async || {
        let record = b.tasks().show(&id).await.expect("show");
        record.is_some_and(|r| r.state == TaskState::Completed)
    })
    .await;
    let record = b.tasks().show(&id).await.expect("show").expect("record");
    assert_eq!(record.node.as_deref(), Some("trace-b"));
    assert_eq!(
        record.trace_id.as_deref(),
        Some(TRACE_ID),
        "the record names its trace"
    );

    let exported = |name: &str| {
        let spans = exporter.get_finished_spans().expect("spans");
        spans.iter().any(|s| s.name == name)
    };
    eventually_async("the task's spans are exported", async || {
        exported("task.run")
    })
    .await;
    let spans = exporter.get_finished_spans().expect("spans");
    let request = one(&spans, "request", "uri", "/api/traced.start");
    let run = one(&spans, "task.run", "task_id", &id);
    let served = one(&spans, "bus.message", "message_type", "stellar.rpc.request");
    for span in [request, run, served] {
        assert_eq!(
            span.span_context.trace_id().to_string(),
            TRACE_ID,
            "{span:#?}"
        );
    }
    let caller = TraceParent::parse(CALLER).expect("valid");
    assert_eq!(request.parent_span_id, SpanId::from_bytes(caller.span_id));
    assert_eq!(
        run.parent_span_id,
        request.span_context.span_id(),
        "the run continues the request that enqueued it"
    );
    assert_eq!(attribute(run, "node_id").as_deref(), Some("trace-b"));
    assert_eq!(attribute(served, "node_id").as_deref(), Some("trace-a"));
    assert_eq!(attribute(served, "sender").as_deref(), Some("trace-b"));
    let call = spans
        .iter()
        .find(|s| s.span_context.span_id() == served.parent_span_id)
        .expect("the served request's parent span is exported");
    assert_eq!(attribute(call, "method").as_deref(), Some("traced.ping"));
    assert_eq!(
        call.parent_span_id,
        run.span_context.span_id(),
        "the RPC call was made by the task run"
    );

    for message in [
        "enqueueing traced work",
        "traced work ran",
        "traced ping served",
    ] {
        let found = lines.containing(message);
        assert!(!found.is_empty(), "no log line {message:?}");
        for line in found {
            assert!(
                line.contains(&format!("trace_id={TRACE_ID}")),
                "a log line of the work without its trace id: {line}"
            );
        }
    }
    b.shutdown().await.expect("B stops");
    a.shutdown().await.expect("A stops");
}
