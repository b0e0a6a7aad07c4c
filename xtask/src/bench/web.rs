//! Web figures, with Debian's `wrk` as the load generator: the `documentation` action at 64
//! keep-alive connections beside a bare hyper server returning the same bytes (same run, same
//! machine), its p99 latency, and the failed requests of a rolling restart of `--cluster 3`
//! under constant load (one round only: it is long).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::stats::Sample;
use crate::cluster::{Env, harness::Redis};
use anyhow::{Context, Result, bail};

/// What one wrk run measured.
#[derive(Debug, Default)]
pub(crate) struct Wrk {
    pub(crate) requests_per_s: f64,
    pub(crate) p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx responses.
    pub(crate) failed: u64,
}

/// One round of web figures; the rolling restart only when `rolling` (round 1: it is long).
pub(super) fn figures(root: &Path, env: &Env, quick: bool, rolling: bool) -> Result<Vec<Sample>> {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("xtask bench: wrk not installed (apt-get install -y wrk): web figures skipped");
        return Ok(Vec::new());
    }
    let seconds = if quick { 3 } else { 10 };
    let (node_run, body_file) = node_documentation(env, seconds)?;
    let base_run = baseline_documentation(root, &body_file, seconds)?;
    let mut samples = vec![
        Sample::new(
            "web.requests_per_s",
            "req/s",
            node_run.requests_per_s,
            "hyper.same_bytes_per_s",
            base_run.requests_per_s,
        ),
        Sample::new(
            "web.p99_ms",
            "ms",
            node_run.p99_ms,
            "hyper.same_bytes_p99_ms",
            base_run.p99_ms,
        ),
    ];
    if rolling {
        let rolling = rolling_restart(env, seconds.max(6))?;
        samples.push(Sample::new(
            "web.rolling_restart_failed",
            "requests",
            rolling.failed as f64,
            "web.rolling_restart_requests",
            rolling.requests_per_s * f64::from(seconds.max(6)),
        ));
    }
    Ok(samples)
}

/// wrk on a node's `documentation` action at 64 connections; the body it served, in a file.
fn node_documentation(env: &Env, seconds: u32) -> Result<(Wrk, PathBuf)> {
    let node_port = free_port()?;
    let mut node = Guard(
        Command::new(&env.bin)
            .args(["run", "--id", "bench-web"])
            .env_remove("STELLAR_REDIS_URL")
            .env("STELLAR_HTTP_ADDR", format!("127.0.0.1:{node_port}"))
            .env("STELLAR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a node")?,
    );
    let url = format!("http://127.0.0.1:{node_port}/api/documentation");
    let body = wait_for_body(&url)?;
    let body_file = env.dir.join("documentation.json");
    std::fs::write(&body_file, &body)?;
    let run = wrk(&url, 64, seconds)?;
    node.stop();
    Ok((run, body_file))
}

/// wrk on a bare hyper server returning the same bytes, the same way.
fn baseline_documentation(root: &Path, body_file: &Path, seconds: u32) -> Result<Wrk> {
    let mut baseline = Guard(
        Command::new(root.join("target/release/examples/web_baseline"))
            .arg(body_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the hyper baseline")?,
    );
    let stdout = baseline.0.stdout.take().context("baseline stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .context("the baseline printed no address")?
        .to_owned();
    let run = wrk(&format!("http://{addr}/api/documentation"), 64, seconds)?;
    baseline.stop();
    Ok(run)
}

/// `--cluster 3` on one port under wrk at 32 connections, a SIGUSR2 rolling restart a second in.
pub(crate) fn rolling_restart(env: &Env, seconds: u32) -> Result<Wrk> {
    let redis = Redis::start(env, &[])?;
    let port = free_port()?;
    let pid_file = env.dir.join("bench-cluster.pid");
    let _ = std::fs::remove_file(&pid_file);
    let mut supervisor = Guard(
        Command::new(&env.bin)
            .args(["run", "--cluster", "3", "--pid-file"])
            .arg(&pid_file)
            .env("STELLAR_REDIS_URL", redis.url())
            .env("STELLAR_SERVER_TOKEN", "bench-token")
            .env("STELLAR_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("STELLAR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the supervisor")?,
    );
    let url = format!("http://127.0.0.1:{port}/api/status");
    wait_for_body(&url)?;
    // Until all three answer.
    thread::sleep(Duration::from_secs(2));
    let pid = supervisor.0.id();
    let restarter = thread::spawn(move || {
        thread::sleep(Duration::from_secs(1));
        let _ = Command::new("kill")
            .args(["-USR2", &pid.to_string()])
            .status();
    });
    let run = wrk(&url, 32, seconds)?;
    let _ = restarter.join();
    supervisor.terminate(Duration::from_secs(20));
    Ok(run)
}

fn wrk(url: &str, connections: u32, seconds: u32) -> Result<Wrk> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    let mut run = Wrk::default();
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            run.requests_per_s = rate.trim().parse().unwrap_or(0.0);
        } else if let Some(p99) = line.strip_prefix("99%") {
            run.p99_ms = millis(p99.trim());
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            run.failed += errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(non_2xx) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.failed += non_2xx.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(run)
}

/// wrk's latency text (`812.00us`, `1.23ms`, `2.00s`) in milliseconds.
fn millis(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.trim().parse::<f64>().unwrap_or(0.0) * factor
}

/// The body of `url` once it answers (a fresh node takes a moment).
fn wait_for_body(url: &str) -> Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let rest = url.strip_prefix("http://").context("an http URL")?;
    let (host, path) = rest.split_once('/').context("a path")?;
    loop {
        if let Ok(body) = get(host, &format!("/{path}")) {
            return Ok(body);
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within 20 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn get(host: &str, path: &str) -> Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    if !response.starts_with(b"HTTP/1.1 200") {
        bail!("not 200");
    }
    Ok(response[split + 4..].to_vec())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A process killed on drop.
struct Guard(Child);

impl Guard {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then SIGKILL after `within`.
    fn terminate(&mut self, within: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.stop();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}
