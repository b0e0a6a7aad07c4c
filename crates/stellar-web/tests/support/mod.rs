//! A cluster of in-memory nodes with a web layer each, and small HTTP and WebSocket clients.
#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use stellar_bus::{
    Bus, BusSettings, Membership, MembershipSettings, MemoryMembershipStore, MemoryTransport,
};
use stellar_cache::{Cache, CacheConfig, MemoryCacheStore};
use stellar_core::{Api, Config, NodeId};
use stellar_rpc::{Rpc, RpcSettings};
use stellar_tasks::{MemoryTaskStore, TaskConfig, Tasks};
use stellar_web::{
    Action, ActionError, Actions, Readiness, Services, Web, WebConfig, always_ready, bind,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// Nodes sharing one transport and one membership store, as nodes share one Redis.
#[derive(Default)]
pub struct Cluster {
    transport: Arc<MemoryTransport>,
    store: Arc<MemoryMembershipStore>,
}

pub struct Node {
    pub api: Api,
    pub web: Web,
    pub addr: SocketAddr,
    pub rpc: Rpc,
    pub membership: Membership,
}

impl Cluster {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn node(&self, name: &str) -> Node {
        self.node_with(name, WebConfig::default(), always_ready(), true)
            .await
    }

    pub async fn node_with(
        &self,
        name: &str,
        config: WebConfig,
        readiness: Readiness,
        ready: bool,
    ) -> Node {
        let api = Api::new(Config {
            id: Some(NodeId::new(name).expect("node id")),
            shutdown_timeout: Duration::from_secs(5),
            ..Config::default()
        });
        let bus = Bus::start(
            &api,
            self.transport.clone(),
            BusSettings::from(api.config()),
        )
        .await
        .expect("bus");
        let membership = Membership::new(
            self.store.clone(),
            &api,
            MembershipSettings::from(api.config()),
        );
        membership.join(&api).await.expect("join");
        let rpc = Rpc::new(
            bus.clone(),
            membership.clone(),
            RpcSettings::from(api.config()),
        );
        rpc.serve();
        let cache = Cache::new(
            Arc::new(MemoryCacheStore::new()),
            api.node_id().clone(),
            CacheConfig::default(),
        );
        let task_store = MemoryTaskStore::new();
        let tasks = Tasks::new(
            Arc::new(task_store.clone()),
            task_store.signal(),
            api.node_id().clone(),
            TaskConfig::default(),
        );
        stellar_web::serve_quiet(&rpc, &tasks);
        let services = Services {
            api: api.clone(),
            bus,
            membership: membership.clone(),
            rpc: rpc.clone(),
            cache,
            tasks,
        };
        let web = Web::new(services, test_actions(), config, readiness);
        let listener = bind("127.0.0.1:0".parse().expect("addr"), false).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        api.spawn(web.clone().serve(listener));
        if ready {
            api.set_ready();
        }
        Node {
            api,
            web,
            addr,
            rpc,
            membership,
        }
    }
}

#[derive(Deserialize)]
struct Echo {
    name: String,
    count: Option<u32>,
}

#[derive(Deserialize)]
struct Slow {
    ms: u64,
}

fn test_actions() -> Actions {
    let actions = Actions::new();
    actions
        .register(
            Action::new("echo", |ctx, input: Echo| async move {
                Ok(serde_json::json!({
                    "name": input.name,
                    "count": input.count,
                    "connection": ctx.connection(),
                }))
            })
            .description("Echoes its input")
            .input("name", "a name")
            .optional_input("count", "a number"),
        )
        .register(Action::new("fail", |_ctx, _: Value| async move {
            Err::<(), _>(ActionError::internal(
                "redis://:hunter2@db: connection refused",
            ))
        }))
        .register(Action::new("panic", |_ctx, _: Value| async move {
            if true {
                panic!("handler bug");
            }
            Ok(())
        }))
        .register(Action::new("slow", |_ctx, input: Slow| async move {
            tokio::time::sleep(Duration::from_millis(input.ms)).await;
            Ok(input.ms)
        }));
    actions
}

/// An HTTP response, as the raw client read it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // The server may answer (413) and close before reading a large body: ignore write errors.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    Response {
        status,
        headers,
        body,
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn ws(addr: SocketAddr) -> Ws {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket");
    socket
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

/// The next JSON text frame (pings and pongs skipped), within 5 s.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("json frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The close frame's code, once the server closes (text frames before it skipped).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s");
        match frame {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}
