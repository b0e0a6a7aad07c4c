//! One trace across the cluster: an HTTP call on node A enqueues a task that node B runs, and the
//! task calls an RPC method on node A. Every span of that work, on both nodes, is exported (to an
//! in-process exporter) under the trace id of the caller's `traceparent`, parented in causal
//! order, and every log line written inside it names that `trace_id`.
//!
//! RPC carries trace context in its request body; with `bus_trace_context` every bus message
//! sent inside the trace carries it too (envelope version 2). The tests share one process-wide
//! subscriber and exporter and tell their spans apart by trace id.

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

/// The subscriber the `stellar` binary installs, with an in-memory exporter instead of OTLP;
/// installed once for the whole test binary.
fn installed() -> &'static (InMemorySpanExporter, Lines) {
    static INSTALLED: OnceLock<(InMemorySpanExporter, Lines)> = OnceLock::new();
    INSTALLED.get_or_init(install)
}

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

fn config(id: &str, redis_url: &str, concurrency: usize, bus_trace_context: bool) -> Config {
    Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new("trace-test-token"),
        redis_url: Some(redis_url.to_owned()),
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        task_concurrency: concurrency,
        shutdown_timeout: Duration::from_secs(3),
        bus_trace_context,
        ..Config::default()
    }
}

/// `traced.work`: logs, then calls `traced.ping` on the node its arguments name, through `rpc`
/// (node B's).
fn work(rpc: Arc<OnceLock<Rpc>>) -> TaskDefinition {
    TaskDefinition::new("traced.work", move |_ctx, a: String| {
        let rpc = rpc.clone();
        async move {
            tracing::info!("traced work ran");
            let rpc = rpc.get().ok_or("node B's RPC is not set yet")?;
            let a = NodeId::new(a)?;
            rpc.call(&a, "traced.ping", serde_json::json!({})).await?;
            Ok(())
        }
    })
}

/// `traced.start`: enqueues `traced.work` (calling back this node) and answers with its id.
fn start_action() -> Action {
    Action::new(
        "traced.start",
        |ctx, _input: serde_json::Value| async move {
            tracing::info!("enqueueing traced work");
            let me = ctx.node_id().to_string();
            ctx.services()
                .tasks
                .enqueue("traced.work", &me, EnqueueOptions::default())
                .await
                .map_err(|err| ActionError::failed(err.to_string()))
        },
    )
}

/// POSTs to `/api/traced.start` with the `caller` traceparent; the JSON body.
async fn call_start(addr: std::net::SocketAddr, caller: &str) -> serde_json::Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /api/traced.start HTTP/1.1\r\nHost: {addr}\r\ntraceparent: {caller}\r\n\
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
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let spans = traced_call(caller, ["trace-a", "trace-b"], false).await;
    assert!(
        !spans.iter().any(|s| s.name == "bus.message"),
        "without bus_trace_context bus messages carry no trace context"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bus_trace_context_the_bus_messages_of_the_work_join_its_trace() {
    let caller = "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01";
    let spans = traced_call(caller, ["trace-c", "trace-d"], true).await;
    let request = one(&spans, "bus.message", "message_type", "stellar.rpc.request");
    let reply = one(&spans, "bus.message", "message_type", "stellar.rpc.reply");
    assert_eq!(attribute(request, "node_id").as_deref(), Some("trace-c"));
    assert_eq!(attribute(reply, "node_id").as_deref(), Some("trace-d"));
    let served = one(&spans, "rpc.serve", "method", "traced.ping");
    assert_eq!(
        request.parent_span_id, served.parent_span_id,
        "the message and the method both continue the call"
    );
}

/// Starts node A (enqueues, serves `traced.ping`) and node B (runs the task) on a fresh Redis,
/// makes the HTTP call with the `caller` traceparent and checks what both modes share: the task
/// runs on B, its record names the trace, the request, run, call and served method are one trace
/// in causal order, and every log line of the work names the trace id. Returns the trace's spans.
async fn traced_call(
    caller: &str,
    [a_id, b_id]: [&str; 2],
    bus_trace_context: bool,
) -> Vec<SpanData> {
    let (exporter, lines) = installed();
    let redis = RedisServer::start();
    let b_rpc = Arc::new(OnceLock::new());
    let a = Node::builder(config(a_id, &redis.url(), 0, bus_trace_context))
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
    let b = Node::builder(config(b_id, &redis.url(), 4, bus_trace_context))
        .task(work(b_rpc.clone()))
        .start()
        .await
        .expect("node B starts");
    b_rpc.set(b.rpc().clone()).expect("set once");

    let id = call_start(a.http_addr().expect("A serves HTTP"), caller).await;
    let id = id.as_str().expect("a task id").to_owned();
    eventually_async("the task completes on node B", async || {
        let record = b.tasks().show(&id).await.expect("show");
        record.is_some_and(|r| r.state == TaskState::Completed)
    })
    .await;
    let trace_id = &caller[3..35];
    let record = b.tasks().show(&id).await.expect("show").expect("record");
    assert_eq!(record.node.as_deref(), Some(b_id));
    assert_eq!(
        record.trace_id.as_deref(),
        Some(trace_id),
        "the record names its trace"
    );

    let of_trace = || -> Vec<SpanData> {
        let spans = exporter.get_finished_spans().expect("spans");
        spans
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == trace_id)
            .collect()
    };
    eventually_async("the work's spans are exported", async || {
        let spans = of_trace();
        ["request", "task.run", "rpc.call", "rpc.serve"]
            .iter()
            .all(|name| spans.iter().any(|s| s.name == *name))
    })
    .await;
    let spans = of_trace();
    let request = one(&spans, "request", "uri", "/api/traced.start");
    let run = one(&spans, "task.run", "task_id", &id);
    let call = one(&spans, "rpc.call", "method", "traced.ping");
    let served = one(&spans, "rpc.serve", "method", "traced.ping");
    let parent = TraceParent::parse(caller).expect("valid");
    assert_eq!(request.parent_span_id, SpanId::from_bytes(parent.span_id));
    assert_eq!(
        run.parent_span_id,
        request.span_context.span_id(),
        "the run continues the request that enqueued it"
    );
    assert_eq!(
        call.parent_span_id,
        run.span_context.span_id(),
        "the RPC call was made by the task run"
    );
    assert_eq!(served.parent_span_id, call.span_context.span_id());
    assert_eq!(attribute(run, "node_id").as_deref(), Some(b_id));
    assert_eq!(attribute(served, "node_id").as_deref(), Some(a_id));
    assert_eq!(attribute(served, "caller").as_deref(), Some(b_id));

    // Both tests log the same lines; each finds its own by trace id, and none may lack one.
    for message in [
        "enqueueing traced work",
        "traced work ran",
        "traced ping served",
    ] {
        let found = lines.containing(message);
        for line in &found {
            assert!(
                line.contains("trace_id="),
                "a log line of the work without its trace id: {line}"
            );
        }
        let ours = format!("trace_id={trace_id}");
        assert!(
            found.iter().any(|line| line.contains(&ours)),
            "no log line {message:?} with {ours}: {found:#?}"
        );
    }
    b.shutdown().await.expect("B stops");
    a.shutdown().await.expect("A stops");
    spans
}
