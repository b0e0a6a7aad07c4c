//! The dashboard in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver, plain HTTP on loopback) against a three-node cluster on a real Redis. Logs in,
//! watches a failing task appear and retries it, pauses and resumes a queue, saves a screenshot
//! of every page under `target/dashboard/`, and checks the page logged no error.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them); `CHROMEDRIVER` and
//! `CHROMIUM` override their paths.

use std::{
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use stellar_core::{Config, DashboardSecret, NodeId, ServerToken};
use stellar_node::Node;
use stellar_tasks::{
    EnqueueOptions, HandlerError, PAUSE_REFRESH, TaskDefinition, TaskState, Tasks,
};
use stellar_testkit::{RedisServer, eventually_within};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SECRET: &str = "browser-dashboard-secret";

/// chromedriver in its own process group, killed with every browser it started when dropped
/// (also when the test panics).
struct Chromedriver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Chromedriver {
    fn start() -> Self {
        let binary =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            std::path::Path::new(&binary).exists(),
            "{binary} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
        );
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {binary}: {err}"));
        Self {
            child,
            port,
            _profile: tempfile::tempdir().expect("a profile directory"),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A WebDriver session in headless Chromium, once chromedriver answers.
    async fn connect(&self) -> Client {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = self._profile.path().display().to_string();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--disable-crash-reporter", "--disable-breakpad",
                    "--window-size=1280,900", format!("--user-data-dir={profile}"),
                ],
            }),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut builder = ClientBuilder::new(HttpConnector::new());
            builder.capabilities(capabilities.clone());
            match builder.connect(&self.url()).await {
                Ok(client) => return client,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("no WebDriver session from chromedriver: {err}"),
            }
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Fails on its first run in this process, succeeds after: a task whose handler was "fixed".
fn flaky() -> TaskDefinition {
    static FAILED_ONCE: AtomicBool = AtomicBool::new(false);
    TaskDefinition::new("flaky", |_ctx, _: Value| async move {
        if !FAILED_ONCE.swap(true, Ordering::SeqCst) {
            return Err::<(), HandlerError>("the payment gateway said no".into());
        }
        Ok(())
    })
    .max_attempts(1)
}

async fn start_node(n: usize, redis_url: &str) -> Node {
    let config = Config {
        id: Some(NodeId::new(format!("dash-node-{n}")).expect("id")),
        server_token: ServerToken::new("browser-test-token"),
        redis_url: Some(redis_url.to_owned()),
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        dashboard_secret: Some(DashboardSecret::new(SECRET)),
        task_queues: vec!["default".into(), "mail".into()],
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    Node::builder(config)
        .task(flaky())
        .start()
        .await
        .expect("the node starts")
}

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).expect("target/dashboard");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("saved {}", path.display());
}

/// The text of the first element `css` matches, or `None` (absent, or replaced meanwhile).
async fn text(client: &Client, css: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

async fn count(client: &Client, css: &str) -> usize {
    client
        .find_all(Locator::Css(css))
        .await
        .map_or(0, |found| found.len())
}

async fn click(client: &Client, css: &str) {
    eventually_within(
        &format!("{css} is clickable"),
        Duration::from_secs(5),
        async || match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.is_ok(),
            Err(_) => false,
        },
    )
    .await;
}

async fn state_of(tasks: &Tasks, id: &str) -> Option<TaskState> {
    tasks
        .show(id)
        .await
        .expect("show")
        .map(|record| record.state)
}

/// The browser's console entries, from chromedriver's log endpoint (`goog:loggingPrefs`).
async fn browser_log(driver: &Chromedriver, client: &Client) -> Vec<Value> {
    let session = client
        .session_id()
        .await
        .expect("session id")
        .expect("a session");
    let body = json!({ "type": "browser" }).to_string();
    let addr: SocketAddr = format!("127.0.0.1:{}", driver.port).parse().expect("addr");
    let mut stream = TcpStream::connect(addr).await.expect("chromedriver");
    let request = format!(
        "POST /session/{session}/se/log HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    // Read the head, then exactly Content-Length bytes: chromedriver may keep the connection.
    let mut raw = Vec::new();
    let read = async {
        let mut buf = [0_u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(usize::MAX);
                if body.len() >= length || n == 0 {
                    return body.to_owned();
                }
            } else if n == 0 {
                return String::new();
            }
        }
    };
    let json = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("chromedriver answers the log request");
    let answer: Value = serde_json::from_str(&json)
        .unwrap_or_else(|err| panic!("chromedriver's log answer {json:?}: {err}"));
    answer["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no log entries in {answer}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(start_node(n, &redis.url()).await);
    }
    let tasks = nodes[1].tasks().clone();
    // A first task on `mail`, so the queue exists before the test pauses it.
    let mail = EnqueueOptions {
        queue: Some("mail".into()),
        ..EnqueueOptions::default()
    };
    let first = tasks
        .enqueue("stellar.log", &json!({ "message": "hello" }), mail.clone())
        .await
        .expect("enqueue");
    eventually_within(
        "the first mail task runs",
        Duration::from_secs(10),
        async || state_of(&tasks, &first).await == Some(TaskState::Completed),
    )
    .await;
    let base = format!("http://{}", nodes[0].http_addr().expect("http"));

    let driver = Chromedriver::start();
    let client = driver.connect().await;

    // Log in.
    client
        .goto(&format!("{base}/dashboard"))
        .await
        .expect("open the dashboard");
    let secret = client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#secret"))
        .await
        .expect("the login form");
    eventually_within("the login form shows", Duration::from_secs(5), async || {
        secret.is_displayed().await.unwrap_or(false)
    })
    .await;
    screenshot(&client, "login").await;
    secret.send_keys(SECRET).await.expect("type the secret");
    click(&client, "#login").await;
    assert!(
        !client
            .current_url()
            .await
            .expect("url")
            .as_str()
            .contains(SECRET),
        "the secret is never in a URL"
    );

    // The overview lists the three nodes, live; some work draws the chart.
    eventually_within(
        "the overview lists 3 nodes",
        Duration::from_secs(10),
        async || {
            text(&client, "#live-nodes").await.as_deref() == Some("3")
                && count(&client, "#overview-nodes tr.node").await == 3
        },
    )
    .await;
    // Bursts a second apart, so the chart has a shape.
    for burst in 0..5_u64 {
        for n in 0..(4 + burst * 3) {
            tasks
                .enqueue(
                    "stellar.sleep",
                    &json!({ "ms": 50 + n * 5 }),
                    EnqueueOptions::default(),
                )
                .await
                .expect("enqueue");
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    eventually_within(
        "the overview counts the work",
        Duration::from_secs(15),
        async || {
            text(&client, "#processed")
                .await
                .and_then(|t| t.parse::<u64>().ok())
                >= Some(51)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    screenshot(&client, "overview").await;

    // A failing task shows on the failed page within 2 s, without a reload.
    click(&client, "a[data-page=failed]").await;
    let enqueued = Instant::now();
    let failing = tasks
        .enqueue("flaky", &json!({ "order": 42 }), EnqueueOptions::default())
        .await
        .expect("enqueue");
    let row = format!("tr.failed-row[data-id=\"{failing}\"]");
    eventually_within(
        "the failed task shows within 2 s",
        Duration::from_secs(2),
        async || count(&client, &row).await == 1,
    )
    .await;
    eprintln!(
        "failed task shown {} ms after its enqueue",
        enqueued.elapsed().as_millis()
    );
    let shown = text(&client, &row).await.expect("the row");
    assert!(
        shown.contains("the payment gateway said no") && shown.contains("1 / 1"),
        "{shown}"
    );
    screenshot(&client, "failed").await;
    click(&client, &format!("button.retry[data-id=\"{failing}\"]")).await;
    eventually_within(
        "the retried task completes",
        Duration::from_secs(5),
        async || state_of(&tasks, &failing).await == Some(TaskState::Completed),
    )
    .await;
    eventually_within(
        "its row leaves the page",
        Duration::from_secs(3),
        async || count(&client, &row).await == 0,
    )
    .await;

    // Pause `mail`: nothing on it runs on any node until it is resumed.
    click(&client, "a[data-page=queues]").await;
    click(&client, "button.pause[data-queue=mail]").await;
    eventually_within("mail shows paused", Duration::from_secs(3), async || {
        count(&client, "button.resume[data-queue=mail]").await == 1
    })
    .await;
    assert!(
        tasks
            .paused_queues()
            .await
            .expect("paused")
            .contains("mail")
    );
    tokio::time::sleep(PAUSE_REFRESH + Duration::from_millis(200)).await;
    let held = tasks
        .enqueue("stellar.log", &json!({ "message": "held" }), mail.clone())
        .await
        .expect("enqueue");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        state_of(&tasks, &held).await,
        Some(TaskState::Queued),
        "a paused queue runs nothing"
    );
    eventually_within(
        "the page shows it waiting",
        Duration::from_secs(3),
        async || {
            text(&client, "tr.queue-row[data-queue=mail] td.depth")
                .await
                .as_deref()
                == Some("1")
        },
    )
    .await;
    screenshot(&client, "queues").await;
    click(&client, "button.resume[data-queue=mail]").await;
    eventually_within(
        "the resumed queue runs it",
        Duration::from_secs(3),
        async || state_of(&tasks, &held).await == Some(TaskState::Completed),
    )
    .await;

    // Nodes: all three, with their uptime and version; quiet one, then let it work again.
    click(&client, "a[data-page=nodes]").await;
    eventually_within(
        "the nodes page lists 3 nodes",
        Duration::from_secs(5),
        async || count(&client, "#nodes-table tr.node-row").await == 3,
    )
    .await;
    click(&client, "button.quiet[data-node=dash-node-3]").await;
    eventually_within("node 3 shows quiet", Duration::from_secs(5), async || {
        count(&client, "button.unquiet[data-node=dash-node-3]").await == 1
    })
    .await;
    assert!(nodes[2].tasks().is_quiet());
    screenshot(&client, "nodes").await;
    click(&client, "button.unquiet[data-node=dash-node-3]").await;
    eventually_within("node 3 works again", Duration::from_secs(5), async || {
        !nodes[2].tasks().is_quiet()
    })
    .await;

    // No errors: neither what the page's own hook collected nor the browser's console log.
    let errors = client
        .execute("return window.dashboardErrors;", vec![])
        .await
        .expect("read the page's errors");
    assert_eq!(errors, json!([]), "the page met errors");
    let log = browser_log(&driver, &client).await;
    let severe: Vec<&Value> = log
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "browser console errors: {severe:?}");

    eprintln!("no console errors; closing");
    tokio::time::timeout(Duration::from_secs(10), client.close())
        .await
        .expect("the browser closes in time")
        .expect("close the browser");
    drop(driver);
    for node in nodes {
        tokio::time::timeout(Duration::from_secs(15), node.shutdown())
            .await
            .expect("the node stops in time")
            .expect("the node stops");
    }
}
