//! `stellar run --otlp-endpoint`: the spans of a request that came with a `traceparent` reach an
//! OTLP/HTTP collector (a minimal one in this test: it records each POST) under the caller's
//! trace id.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

mod support;

use stellar_testkit::Process;
use support::{free_port, stellar};

const CALLER: &str = "00-5e0f1a2b3c4d5e6f708192a3b4c5d6e7-1122334455667788-01";

/// One request the collector received: path, content type, body.
type Received = (String, String, Vec<u8>);

/// Accepts connections on `listener` for as long as the test runs, answering every request with
/// an empty 200 (an empty protobuf `ExportTraceServiceResponse`) and sending it down `sent`.
fn collect(listener: TcpListener, sent: mpsc::Sender<Received>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let Some(request) = read_request(&stream) else {
            continue;
        };
        let mut stream = stream;
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
        if sent.send(request).is_err() {
            return;
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let (mut length, mut content_type) = (0, String::new());
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "content-type" => content_type = value.trim().to_owned(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, content_type, body))
}

fn get_status_with_traceparent(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET /api/status HTTP/1.1\r\nHost: localhost\r\ntraceparent: {CALLER}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn a_requests_spans_reach_the_otlp_collector_under_the_callers_trace() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let collector = listener.local_addr().expect("addr");
    let (sent, received) = mpsc::channel();
    std::thread::spawn(move || collect(listener, sent));

    let port = free_port();
    let endpoint = format!("http://{collector}");
    let http = format!("127.0.0.1:{port}");
    let node = Process::spawn(
        "node",
        stellar(&[
            "run",
            "--id",
            "otlp-1",
            "--http",
            &http,
            "--otlp-endpoint",
            &endpoint,
        ]),
    );
    node.wait_for_line(&["ready", "otlp-1"], Duration::from_secs(10));
    get_status_with_traceparent(port);
    // A graceful stop flushes the spans still batched.
    node.signal("TERM");

    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&CALLER[3 + 2 * i..5 + 2 * i], 16).expect("hex"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (path, content_type, body) = received
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no span of the trace exported\n{}", node.output()));
        assert_eq!(
            path, "/v1/traces",
            "the traces path is added to a bare endpoint"
        );
        assert_eq!(content_type, "application/x-protobuf");
        if body.windows(16).any(|w| w == trace_id.as_slice())
            && body.windows(b"request".len()).any(|w| w == b"request")
        {
            break;
        }
    }
}
