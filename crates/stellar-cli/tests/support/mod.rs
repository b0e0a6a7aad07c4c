//! Shared by the end-to-end tests of the `stellar` binary.

use std::process::Command;

/// `stellar ARGS…` with no `STELLAR_*` or `RUST_LOG` variable inherited from the test's
/// environment, so each test sets exactly the configuration it means. Nodes serve no HTTP unless
/// the test sets `STELLAR_HTTP_ADDR` (tests run in parallel; they would all want port 8080).
#[allow(dead_code)]
pub(crate) fn stellar(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stellar"));
    scrub(&mut command);
    command.args(args);
    command
}

/// A loopback port nothing listens on (now).
#[allow(dead_code)]
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET path` on `127.0.0.1:port`, one request per connection: the status code and the body
/// as JSON (`null` if it is not JSON).
#[allow(dead_code)]
pub(crate) fn http_get(port: u16, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// Removes inherited `STELLAR_*` and `RUST_LOG` variables from `command`, and serves no HTTP
/// unless the test sets `STELLAR_HTTP_ADDR` or `--http` (tests run in parallel; every node would
/// want port 8080).
pub(crate) fn scrub(command: &mut Command) {
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("STELLAR_")) {
        command.env_remove(name);
    }
    command.env_remove("RUST_LOG");
    command.env("STELLAR_HTTP_ADDR", "");
}

/// The state letter and parent pid of `pid` from `/proc/<pid>/stat`; `None` if there is no such
/// process.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the last ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a running process (a zombie waiting to be reaped has stopped running).
#[allow(dead_code)]
pub(crate) fn is_running(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// The running child processes of `parent`.
#[allow(dead_code)]
pub(crate) fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, ppid)| ppid == parent && state != 'Z'))
        .collect()
}
