//! A `redis-server` child process owned by a test.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

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
    extra_args: Vec<String>,
    child: Option<Child>,
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
        let dir = tempfile::Builder::new()
            .prefix("stellar-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        let mut server = Self {
            port: 0,
            dir,
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
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

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the process and waits for `PING`; on failure returns the log.
    fn spawn(&mut self) -> Result<(), String> {
        let binary =
            std::env::var("STELLAR_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        self.spawn_with_binary(&binary)
    }

    fn spawn_with_binary(&mut self, binary: &str) -> Result<(), String> {
        let log_path = self.log_path();
        let _ = std::fs::remove_file(&log_path);
        let mut child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log_path)
            .args(&self.extra_args)
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

fn free_port() -> u16 {
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
        assert!(server.ping());
        assert!(server.url().ends_with(&port.to_string()));
        drop(server);
        assert!(!ping(port), "server still answers after drop");
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
                extra_args: vec![],
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
