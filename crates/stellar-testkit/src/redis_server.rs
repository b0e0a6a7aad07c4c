//! A `redis-server` child process owned by a test.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::resp::{self, Reply};

/// How long a fresh server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports to try when another process takes ours between probing and binding.
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` on a free loopback port, killed on drop.
///
/// If the test panics, dropping the guard prints the tail of the server's log to stderr, next to
/// the panic message.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    /// What to run, kept for [`RedisServer::restart`].
    launch: Launch,
    child: Option<Child>,
}

/// How to run one server: the program, and the arguments around the common ones (port, bind
/// address, no persistence, directory, log file).
#[derive(Debug, Clone, Default)]
pub(crate) struct Launch {
    /// The binary; `None` runs `redis-server` (or `STELLAR_REDIS_SERVER`).
    pub(crate) program: Option<String>,
    /// Arguments before the common ones: a config file has to come first.
    pub(crate) leading: Vec<String>,
    /// Arguments after the common ones, which they override.
    pub(crate) trailing: Vec<String>,
}

impl Launch {
    /// `redis-server` with `args` after the common ones.
    pub(crate) fn args<S: AsRef<str>>(args: &[S]) -> Self {
        Self {
            trailing: args.iter().map(|arg| arg.as_ref().to_owned()).collect(),
            ..Self::default()
        }
    }
}

impl RedisServer {
    /// Starts a server with no persistence.
    ///
    /// # Panics
    ///
    /// Panics if `redis-server` cannot be found or does not answer `PING` in time, with the
    /// server's log in the message.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra `redis-server` arguments, e.g. `["--appendonly", "yes"]`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_launch(|_, _| Launch::args(args))
    }

    /// Starts a server as `launch(dir, port)` says, asking again for each port tried, so the
    /// arguments can name the server's directory or pick more ports (a cluster bus port).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub(crate) fn start_launch(mut launch: impl FnMut(&Path, u16) -> Launch) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stellar-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        let mut server = Self {
            port: 0,
            dir,
            launch: Launch::default(),
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            server.launch = launch(server.dir.path(), server.port);
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") && attempt < PORT_ATTEMPTS => {}
                Err(log) => panic!("redis-server did not start on port {}:\n{log}", server.port),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory (its log, and its AOF/RDB files if enabled).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server with `SIGKILL` and waits for it to exit. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The process may already have exited; either way `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port and directory.
    ///
    /// # Panics
    ///
    /// Panics if the port cannot be bound again within the start timeout.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(log) => panic!("redis-server did not restart on port {}:\n{log}", self.port),
            }
        }
    }

    /// Whether the server answers `PING` right now.
    pub fn ping(&self) -> bool {
        ping(self.port)
    }

    /// The process id; `None` after [`RedisServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server was started and not killed since (it may not answer yet; a process
    /// that crashed by itself still counts).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends one command and returns its reply; a Redis error is a [`Reply::Error`].
    ///
    /// # Panics
    ///
    /// Panics if the server cannot be reached or the reply cannot be read.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.try_command(args)
            .unwrap_or_else(|err| panic!("{args:?} on port {}: {err}", self.port))
    }

    /// Sends commands on one connection, in order, and returns their replies: `SET` then
    /// `WAIT 1 2000` waits for that write to reach a replica. (Each [`RedisServer::command`] has
    /// a connection of its own.) A reply is read within 5 s.
    ///
    /// # Panics
    ///
    /// Panics if the server cannot be reached or a reply cannot be read.
    pub fn commands(&self, commands: &[&[&str]]) -> Vec<Reply> {
        resp::commands(self.port, commands)
            .unwrap_or_else(|err| panic!("{commands:?} on port {}: {err}", self.port))
    }

    /// As [`RedisServer::command`], returning I/O errors instead of panicking.
    pub(crate) fn try_command(&self, args: &[&str]) -> std::io::Result<Reply> {
        resp::command(self.port, args)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the process and waits for `PING`; on failure returns the log.
    fn spawn(&mut self) -> Result<(), String> {
        let binary = self.launch.program.clone().unwrap_or_else(server_binary);
        self.spawn_with_binary(&binary)
    }

    fn spawn_with_binary(&mut self, binary: &str) -> Result<(), String> {
        let log_path = self.log_path();
        let _ = std::fs::remove_file(&log_path);
        let mut child = Command::new(binary)
            .args(&self.launch.leading)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log_path)
            .args(&self.launch.trailing)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                if err.kind() == ErrorKind::NotFound {
                    panic!(
                        "`{binary}` not found: integration tests need a real Redis. Install it \
                         (Debian/Ubuntu: `apt-get update && apt-get install -y redis-server`) or set \
                         STELLAR_REDIS_SERVER to the path of a redis-server binary"
                    );
                }
                panic!("cannot run `{binary}`: {err}");
            });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!("exited with {status}\n{stderr}{}", self.log()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no PING answer within {START_TIMEOUT:?}\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- redis-server log (port {}, last 40 lines) ---",
                self.port
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The `redis-server` binary: `STELLAR_REDIS_SERVER`, else `redis-server` from `PATH`.
fn server_binary() -> String {
    std::env::var("STELLAR_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// A tool that comes with Redis (`redis-cli`, `redis-sentinel`): the one beside
/// `STELLAR_REDIS_SERVER` if there is one, else the one on `PATH`; `None` if neither exists.
pub(crate) fn companion_binary(name: &str) -> Option<PathBuf> {
    let beside_server = std::env::var_os("STELLAR_REDIS_SERVER")
        .and_then(|server| Some(Path::new(&server).parent()?.join(name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    beside_server
        .into_iter()
        .chain(on_path)
        .find(|candidate| candidate.is_file())
}

/// Polls `probe` every 20 ms until it returns `Ok`; after `within`, returns its last error.
pub(crate) fn wait_for<T>(
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(reason) if Instant::now() > deadline => return Err(reason),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Whether the master on `master_port` lists the replica on `replica_port` as online
/// (`INFO replication`). A replica reports its link up once it has loaded the master's data,
/// a moment before the master streams writes to it.
pub(crate) fn replica_online(master_port: u16, replica_port: u16) -> Result<(), String> {
    let info = resp::command(master_port, &["INFO", "replication"])
        .map_err(|err| format!("master {master_port}: {err}"))?;
    let text = info.text().unwrap_or_default();
    let online = text.lines().any(|line| {
        line.starts_with("slave")
            && line.contains(&format!(",port={replica_port},"))
            && line.contains(",state=online,")
    });
    online
        .then_some(())
        .ok_or_else(|| format!("master {master_port} has no online replica {replica_port}"))
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    listener
        .local_addr()
        .expect("bound socket has an address")
        .port()
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server started with `--requirepass` answers `-NOAUTH`: it is up all the same.
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_ping_and_stops_on_drop() {
        let server = RedisServer::start();
        let port = server.port();
        let pid = server.pid().expect("running");
        assert!(server.ping());
        assert!(server.url().ends_with(&port.to_string()));
        drop(server);
        assert!(!ping(port), "server still answers after drop");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} left behind"
        );
    }

    #[test]
    fn answers_commands_and_errors_as_replies() {
        let server = RedisServer::start();
        assert_eq!(
            server.command(&["SET", "greeting", "hello"]),
            Reply::Status("OK".into())
        );
        assert_eq!(
            server.command(&["GET", "greeting"]).text().as_deref(),
            Some("hello")
        );
        assert_eq!(server.command(&["GET", "nothing"]), Reply::Nil);
        assert!(matches!(
            server.command(&["INCR", "greeting"]),
            Reply::Error(message) if message.starts_with("ERR")
        ));
        let info = server.command(&["INFO", "replication"]);
        assert_eq!(info.field("role").as_deref(), Some("master"));
    }

    #[test]
    fn commands_share_one_connection() {
        let server = RedisServer::start();
        let replies = server.commands(&[&["CLIENT", "ID"], &["CLIENT", "ID"]]);
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0], replies[1], "the same client");
        assert_ne!(
            server.command(&["CLIENT", "ID"]),
            replies[0],
            "a new client"
        );
    }

    #[test]
    fn restarts_on_the_same_port() {
        let mut server = RedisServer::start();
        let port = server.port();
        server.kill();
        assert!(!server.ping());
        server.restart();
        assert_eq!(server.port(), port);
        assert!(server.ping());
    }

    #[test]
    fn two_servers_get_different_ports() {
        let (a, b) = (RedisServer::start(), RedisServer::start());
        assert_ne!(a.port(), b.port());
        assert!(a.ping() && b.ping());
    }

    #[test]
    fn missing_binary_fails_loudly() {
        let result = std::thread::spawn(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut server = RedisServer {
                port: free_port(),
                dir,
                launch: Launch::default(),
                child: None,
            };
            server.spawn_with_binary("/nonexistent/redis-server")
        })
        .join();
        let panic = result.expect_err("a missing binary must panic");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("apt-get install -y redis-server"),
            "{message}"
        );
    }
}
