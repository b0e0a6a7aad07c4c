//! The dashboard in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver, plain HTTP on loopback) against a three-node cluster on a real Redis. Logs in,
//! watches a failing task appear and retries it, pauses and resumes a queue, finds a task by id,
//! runs a delayed task now and unschedules a schedule, browses and deletes cache keys, sees a
//! forged bus message counted, stops a node; saves a screenshot of every page and the overview's
//! first paint under `target/dashboard/`, and checks the page logged no error.
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
use stellar_bus::{Bus, BusSettings};
use stellar_cache::Cache;
use stellar_core::{Api, Config, DashboardSecret, NodeId, NodeState, ServerToken};
use stellar_node::Node;
use stellar_tasks::{
    EnqueueOptions, HandlerError, PAUSE_REFRESH, Recurrence, ScheduleOptions, TaskDefinition,
    TaskState, Tasks,
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

/// Clicks `css`, which asks `confirm()`, and accepts the dialog.
async fn confirm_click(client: &Client, css: &str) {
    let element = client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("{css}: {err}"));
    // The click returns once the dialog is open (or reports it): accept it either way.
    let _ = element.click().await;
    // No dialog yet: the click may have hit a button the page had just re-rendered (it refreshes
    // on its own), or the loaded machine is slow to open it. Click the current button again,
    // which does nothing while a dialog is open, so at most one confirm() is ever accepted.
    eventually_within(
        &format!("the confirm() of {css} is accepted"),
        Duration::from_secs(15),
        async || {
            if client.accept_alert().await.is_ok() {
                return true;
            }
            if let Ok(again) = client.find(Locator::Css(css)).await {
                let _ = again.click().await;
            }
            false
        },
    )
    .await;
}

/// Types `text` into the input `css` (emptied first) and clicks `submit`.
async fn submit(client: &Client, css: &str, text: &str, submit: &str) {
    let input = client.find(Locator::Css(css)).await.expect(css);
    input.clear().await.expect("clear the input");
    input.send_keys(text).await.expect("type");
    click(client, submit).await;
}

/// The overview's first contentful paint (ms after navigation start), as the browser timed it:
/// printed and written to `target/dashboard/first-paint.txt`; no assertion on its value.
async fn record_first_paint(client: &Client, base: &str) {
    client
        .goto(&format!("{base}/dashboard"))
        .await
        .expect("open the dashboard");
    eventually_within("the overview shows", Duration::from_secs(10), async || {
        text(client, "#live-nodes").await.as_deref() == Some("3")
    })
    .await;
    let script = "const paint = performance.getEntriesByType('paint')\
        .find((e) => e.name === 'first-contentful-paint'); return paint ? paint.startTime : null;";
    let mut first_paint = None;
    eventually_within(
        "the browser times the first paint",
        Duration::from_secs(5),
        async || {
            first_paint = client
                .execute(script, vec![])
                .await
                .ok()
                .and_then(|v| v.as_f64());
            first_paint.is_some()
        },
    )
    .await;
    let ms = first_paint.expect("a first paint");
    println!("overview first contentful paint: {ms:.1} ms");
    let line = format!("first-contentful-paint of /dashboard (overview, logged in): {ms:.1} ms\n");
    std::fs::write(screenshots().join("first-paint.txt"), line).expect("write first-paint.txt");
}

/// Tasks page: a task found by id shows its state, arguments (as text) and timeline; an unknown
/// id says so.
async fn check_tasks_page(client: &Client, tasks: &Tasks) {
    let args = json!({ "message": "<img src=x onerror=alert(1)>" });
    let id = tasks
        .enqueue("stellar.log", &args, EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually_within("the task runs", Duration::from_secs(10), async || {
        state_of(tasks, &id).await == Some(TaskState::Completed)
    })
    .await;
    click(client, "a[data-page=tasks]").await;
    submit(client, "#task-id", "no-such-task", "#task-search").await;
    eventually_within(
        "an unknown id is reported",
        Duration::from_secs(5),
        async || {
            text(client, "#task-missing").await.as_deref() == Some("no task with id no-such-task")
        },
    )
    .await;
    submit(client, "#task-id", &id, "#task-search").await;
    eventually_within("the task shows", Duration::from_secs(5), async || {
        text(client, "#task-state").await.as_deref() == Some("completed")
    })
    .await;
    let shown = text(client, "#task-args").await.expect("arguments");
    assert!(
        shown.contains("<img src=x onerror=alert(1)>"),
        "arguments shown as text: {shown}"
    );
    assert_eq!(
        count(client, "#task-args img").await,
        0,
        "arguments are never HTML"
    );
    assert!(
        count(client, "#task-timeline li").await >= 3,
        "enqueued, started, completed"
    );
    screenshot(client, "tasks").await;
}

/// Scheduled page: a delayed task and a schedule are listed; run now runs the delayed task,
/// unschedule removes the schedule.
async fn check_scheduled_page(client: &Client, tasks: &Tasks) {
    let later = tasks
        .enqueue_in(
            Duration::from_secs(3600),
            "stellar.log",
            &json!({ "message": "later" }),
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    let hourly = Recurrence::every(Duration::from_secs(3600));
    let options = ScheduleOptions::default().id("hourly-report");
    tasks
        .schedule(
            "stellar.log",
            &json!({ "message": "report" }),
            hourly,
            options,
        )
        .await
        .expect("schedule");
    click(client, "a[data-page=scheduled]").await;
    let delayed_row = format!("tr.delayed-row[data-id=\"{later}\"]");
    let schedule_row = "tr.schedule-row[data-id=\"hourly-report\"]";
    eventually_within("both are listed", Duration::from_secs(8), async || {
        count(client, &delayed_row).await == 1 && count(client, schedule_row).await == 1
    })
    .await;
    screenshot(client, "scheduled").await;
    click(client, &format!("button.run-now[data-id=\"{later}\"]")).await;
    eventually_within(
        "the delayed task ran",
        Duration::from_secs(10),
        async || state_of(tasks, &later).await == Some(TaskState::Completed),
    )
    .await;
    eventually_within("its row leaves", Duration::from_secs(8), async || {
        count(client, &delayed_row).await == 0
    })
    .await;
    confirm_click(client, "button.unschedule[data-id=\"hourly-report\"]").await;
    eventually_within("the schedule is gone", Duration::from_secs(8), async || {
        tasks.schedules().await.expect("schedules").is_empty()
            && count(client, schedule_row).await == 0
    })
    .await;
}

/// Cache page: keys by prefix, one value as text, delete a key.
async fn check_cache_page(client: &Client, cache: &Cache) {
    for (key, value) in [
        ("report:daily", "{\"rows\": 42}"),
        ("report:weekly", "w"),
        ("other:1", "o"),
    ] {
        cache
            .save(key, &value, Some(Duration::from_secs(600)))
            .await
            .expect("save");
    }
    click(client, "a[data-page=cache]").await;
    submit(client, "#cache-prefix", "report:", "#cache-search").await;
    eventually_within(
        "the report keys are listed",
        Duration::from_secs(5),
        async || {
            count(client, "tr.cache-row").await == 2
                && count(client, "tr.cache-row[data-key=\"report:daily\"]").await == 1
        },
    )
    .await;
    click(client, "button.view-key[data-key=\"report:daily\"]").await;
    eventually_within("the value shows", Duration::from_secs(5), async || {
        text(client, "#cache-value")
            .await
            .is_some_and(|t| t.contains("rows"))
    })
    .await;
    screenshot(client, "cache").await;
    confirm_click(client, "button.delete-key[data-key=\"report:weekly\"]").await;
    eventually_within("the key is deleted", Duration::from_secs(8), async || {
        cache.peek("report:weekly").await.expect("peek").is_none()
            && count(client, "tr.cache-row").await == 1
    })
    .await;
}

/// Bus page: a message signed with another token shows as a bad signature on this node.
async fn check_bus_page(client: &Client, node: &Node) {
    let forger = Api::new(Config {
        id: Some(NodeId::new("forger").expect("id")),
        server_token: ServerToken::new("not-the-token"),
        ..Config::default()
    });
    let forged = Bus::start(
        &forger,
        node.transport().clone(),
        BusSettings::from(forger.config()),
    )
    .await
    .expect("the forger's bus");
    forged
        .publish("stellar.test", &"forged")
        .await
        .expect("publish");
    click(client, "a[data-page=bus]").await;
    eventually_within("the rejection shows", Duration::from_secs(8), async || {
        text(client, "tr.bus-row.this td.bus-bad_signature")
            .await
            .and_then(|t| t.parse::<u64>().ok())
            >= Some(1)
    })
    .await;
    assert_eq!(
        count(client, "tr.bus-row").await,
        3,
        "every node's counters"
    );
    screenshot(client, "bus").await;
    forger.shutdown().await.expect("the forger stops");
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

    record_first_paint(&client, &base).await;

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

    check_tasks_page(&client, &tasks).await;
    check_scheduled_page(&client, &tasks).await;
    check_cache_page(&client, nodes[1].cache()).await;
    check_bus_page(&client, &nodes[0]).await;

    // Stop node 3 from the nodes page: it leaves the list.
    click(&client, "a[data-page=nodes]").await;
    confirm_click(&client, "button.stop[data-node=dash-node-3]").await;
    eventually_within(
        "node 3 leaves the list",
        Duration::from_secs(15),
        async || count(&client, "#nodes-table tr.node-row").await == 2,
    )
    .await;
    assert!(nodes[2].api().state() >= NodeState::Stopping);

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
