//! The supervisor's control channel: a Unix socket between `stellar run --cluster N` and each of
//! its workers.
//!
//! The supervisor listens on a socket in a private temporary directory and passes its path to
//! every worker in [`SOCKET_ENV`]. A worker connects as it starts and writes one JSON object per
//! line: first [`Message::Hello`] (its name, pid and incarnation), then [`Message::Ready`] once the
//! node is ready. The supervisor writes nothing; it keeps the connection open for as long as it
//! lives, so end of file on it means the supervisor is gone and the worker stops gracefully.
//! Readiness travels here, never through log text.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use stellar_core::Api;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        UnixListener, UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::mpsc,
};
use tracing::{debug, info, warn};

/// Set by the supervisor on each worker: the path of its control socket. A worker with this
/// variable is supervised: it reports to the socket, stops when the socket closes, and treats a
/// repeated SIGINT/SIGTERM as the same request (only SIGQUIT forces it out).
pub(crate) const SOCKET_ENV: &str = "STELLAR_SUPERVISOR_SOCKET";
/// Set by the supervisor on a rolling-restart replacement: the incarnation of the worker of the
/// same name it replaces, so the membership lets it take over that name while the old one drains.
pub(crate) const REPLACES_ENV: &str = "STELLAR_REPLACES_INCARNATION";
/// Set by the supervisor on a restarted worker: how many times in a row this worker's slot died
/// quickly. The worker reports it as the gauge `supervisor_restarts` in `api.status`.
pub(crate) const RESTARTS_ENV: &str = "STELLAR_WORKER_RESTARTS";
/// Set to `stdin` when the supervisor hands its HTTP listener to the worker as standard input.
pub(crate) const LISTENER_ENV: &str = "STELLAR_HTTP_LISTENER";

/// One line from a worker to its supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Message {
    /// The first line: who is connecting.
    Hello {
        name: String,
        pid: u32,
        incarnation: u64,
    },
    /// The node is ready: it serves RPC and runs tasks.
    Ready,
}

/// What the supervisor hears from one worker: the message and the pid the kernel vouches for.
#[derive(Debug)]
pub(crate) struct Report {
    /// The peer's pid from `SO_PEERCRED`, not from the message.
    pub(crate) pid: u32,
    pub(crate) message: Message,
}

/// The supervisor's end: a listening socket in a private directory removed on drop.
#[derive(Debug)]
pub(crate) struct ControlServer {
    path: PathBuf,
    /// Owns the directory; dropping it removes the directory and the socket.
    _dir: tempfile::TempDir,
}

impl ControlServer {
    /// Listens on a fresh socket and forwards every worker's reports to `reports`.
    ///
    /// # Errors
    ///
    /// Fails if the directory or the socket cannot be created.
    pub(crate) fn start(reports: mpsc::UnboundedSender<Report>) -> Result<Self> {
        let temp = std::env::temp_dir();
        remove_stale_dirs(&temp);
        // The directory is created mode 0700: only our user can connect. A later supervisor
        // removes it if we die without cleaning up (SIGKILL): it finds nobody listening.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&temp)
            .context("creating the supervisor's control directory")?;
        let path = dir.path().join(SOCKET_NAME);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        tokio::spawn(accept(listener, reports));
        Ok(Self { path, _dir: dir })
    }

    /// The socket's path, for [`SOCKET_ENV`].
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

const DIR_PREFIX: &str = "stellar-supervisor-";
const SOCKET_NAME: &str = "control.sock";
/// A control directory without a socket this old is debris (its supervisor died between creating
/// it and binding); a younger one may belong to a supervisor starting right now.
const UNBOUND_DEBRIS_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the control directories of supervisors that are no longer running: those whose socket
/// refuses a connection (nobody listens on it any more). The pid in a directory's name is not
/// checked against `/proc`: a supervisor in another pid namespace sharing this temporary directory
/// would look dead.
fn remove_stale_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok())
            .is_some();
        if ours && is_stale(&entry.path()) {
            // Another user's directory, or one removed meanwhile: nothing to do.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the control directory `dir` belongs to no running supervisor.
fn is_stale(dir: &Path) -> bool {
    use std::io::ErrorKind;
    match std::os::unix::net::UnixStream::connect(dir.join(SOCKET_NAME)) {
        // A live supervisor accepts (and reads end of file from us at once).
        Ok(_) => false,
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => true,
        Err(err) if err.kind() == ErrorKind::NotFound => std::fs::metadata(dir)
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| {
                modified
                    .elapsed()
                    .is_ok_and(|age| age > UNBOUND_DEBRIS_AFTER)
            }),
        // Not ours to judge (another user's directory, for one).
        Err(_) => false,
    }
}

/// Accepts workers until the runtime stops; each connection lives as long as its worker.
async fn accept(listener: UnixListener, reports: mpsc::UnboundedSender<Report>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, reports.clone()));
            }
            Err(err) => {
                warn!(error = %err, "control socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one worker's lines until it closes the connection (it exited).
async fn serve(stream: UnixStream, reports: mpsc::UnboundedSender<Report>) {
    let pid = match stream.peer_cred().map(|cred| cred.pid()) {
        Ok(Some(pid)) => pid.unsigned_abs(),
        _ => {
            warn!("control socket: a peer without credentials; ignored");
            return;
        }
    };
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Message>(&line) {
            Ok(message) => {
                if reports.send(Report { pid, message }).is_err() {
                    break;
                }
            }
            Err(err) => warn!(pid, error = %err, "control socket: unreadable line ignored"),
        }
    }
    debug!(pid, "control connection closed");
}

/// A worker's end of the control channel.
#[derive(Debug)]
pub(crate) struct Control {
    writer: OwnedWriteHalf,
    reader: Option<OwnedReadHalf>,
}

impl Control {
    /// Connects to the supervisor named by [`SOCKET_ENV`] and says hello; `None` when this
    /// process is not supervised.
    ///
    /// # Errors
    ///
    /// Fails if the variable is set but the supervisor cannot be reached: a supervised worker
    /// does not run without its supervisor.
    pub(crate) async fn connect(name: &str, incarnation: u64) -> Result<Option<Self>> {
        let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        Self::connect_to(Path::new(&path), name, incarnation)
            .await
            .map(Some)
    }

    async fn connect_to(path: &Path, name: &str, incarnation: u64) -> Result<Self> {
        let stream = UnixStream::connect(path).await.with_context(|| {
            format!(
                "connecting to the supervisor's control socket {} ({SOCKET_ENV}); \
                 a supervised worker does not run without its supervisor",
                path.display()
            )
        })?;
        let (reader, writer) = stream.into_split();
        let mut control = Self {
            writer,
            reader: Some(reader),
        };
        control
            .send(&Message::Hello {
                name: name.to_owned(),
                pid: std::process::id(),
                incarnation,
            })
            .await;
        Ok(control)
    }

    /// Tells the supervisor the node is ready.
    ///
    /// # Errors
    ///
    /// None: a supervisor gone meanwhile (EPIPE) is only logged; the node stops gracefully when
    /// it sees the socket closed ([`Control::stop_when_supervisor_exits`]).
    pub(crate) async fn ready(&mut self) -> Result<()> {
        self.send(&Message::Ready).await;
        Ok(())
    }

    /// Writes one line; a failure (the supervisor is gone) is logged, not returned.
    async fn send(&mut self, message: &Message) {
        let mut line = serde_json::to_string(message).expect("control messages serialise");
        line.push('\n');
        if let Err(err) = self.writer.write_all(line.as_bytes()).await {
            warn!(error = %err, "could not write to the supervisor's control socket (the supervisor is gone?); this worker stops when it sees the socket closed");
        }
    }

    /// Stops the node `api` gracefully when the supervisor goes away (end of file on the socket),
    /// until the node stops for another reason.
    pub(crate) fn stop_when_supervisor_exits(&mut self, api: &Api) {
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        info!(node_id = %api.node_id(), "watching the supervisor's control socket");
        let api = api.clone();
        // Not on the api's tracker: it must not hold up the node's own shutdown.
        tokio::spawn(async move {
            let mut byte = [0_u8; 1];
            tokio::select! {
                () = api.stop_requested() => {}
                // The supervisor never writes: any return (end of file or an error) means it is gone.
                _ = reader.read(&mut byte) => {
                    // Stop first: the log line below may go nowhere, the supervisor read our output.
                    api.stop();
                    warn!(node_id = %api.node_id(), "the supervisor is gone (control socket closed); stopping");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_of_supervisors_that_do_not_listen_are_removed() {
        let temp = tempfile::tempdir().expect("dir");
        let dir = |name: &str| {
            let dir = temp.path().join(format!("{DIR_PREFIX}{name}"));
            std::fs::create_dir(&dir).expect("mkdir");
            dir
        };
        // A live supervisor whose pid this process cannot see (another pid namespace).
        let live = dir("999999999-live");
        let _listening =
            std::os::unix::net::UnixListener::bind(live.join(SOCKET_NAME)).expect("bind");
        // A dead one: its socket left behind, nobody listening.
        let dead = dir(&format!("{}-dead", std::process::id()));
        drop(std::os::unix::net::UnixListener::bind(dead.join(SOCKET_NAME)).expect("bind"));
        // One starting right now: no socket yet.
        let starting = dir("999999998-starting");
        remove_stale_dirs(temp.path());
        assert!(live.exists(), "a live supervisor's directory was removed");
        assert!(!dead.exists(), "a dead supervisor's directory was kept");
        assert!(
            starting.exists(),
            "a starting supervisor's directory was removed"
        );
    }

    #[tokio::test]
    async fn a_worker_whose_supervisor_is_gone_only_logs_its_reports() {
        let temp = tempfile::tempdir().expect("dir");
        let path = temp.path().join(SOCKET_NAME);
        let listener = UnixListener::bind(&path).expect("bind");
        let mut control = Control::connect_to(&path, "w", 1).await.expect("connect");
        drop(listener.accept().await.expect("accept"));
        drop(listener);
        // The supervisor is gone: writes fail with EPIPE, which ready() only logs.
        for _ in 0..3 {
            control.ready().await.expect("ready does not fail");
        }
    }

    #[test]
    fn messages_are_one_json_object_per_line() {
        let hello = Message::Hello {
            name: "stellar-worker-1".into(),
            pid: 42,
            incarnation: 7,
        };
        let text = serde_json::to_string(&hello).expect("json");
        assert_eq!(
            text,
            r#"{"hello":{"name":"stellar-worker-1","pid":42,"incarnation":7}}"#
        );
        assert_eq!(
            serde_json::to_string(&Message::Ready).expect("json"),
            r#""ready""#
        );
        assert_eq!(
            serde_json::from_str::<Message>(&text).expect("parse"),
            hello
        );
    }
}
