//! A child process owned by a test, with its output captured line by line.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

/// A spawned process whose stdout and stderr lines are collected, killed on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    output: Arc<Output>,
}

#[derive(Debug, Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Output {
    fn lines(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Process {
    /// Spawns `command` with stdin closed and stdout/stderr captured.
    ///
    /// # Panics
    ///
    /// Panics if the process cannot be spawned.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {name}: {err}"));
        let output = Arc::new(Output::default());
        if let Some(stdout) = child.stdout.take() {
            collect(stdout, output.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            collect(stderr, output.clone());
        }
        Self {
            name: name.to_owned(),
            child: Some(child),
            output,
        }
    }

    /// The process id.
    ///
    /// # Panics
    ///
    /// Panics if the process was already reaped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process still owned").id()
    }

    /// Everything the process printed so far, stdout and stderr interleaved by arrival.
    pub fn output(&self) -> String {
        self.output.lines().join("\n")
    }

    /// Waits until a line containing every one of `needles` appears, and returns it.
    ///
    /// # Panics
    ///
    /// Panics with the whole output if no such line appears within `within`.
    pub fn wait_for_line(&self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut lines = self.output.lines();
        loop {
            if let Some(line) = lines
                .iter()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: no line with {needles:?} within {within:?}; output:\n{}",
                self.name,
                lines.join("\n")
            );
            lines = self
                .output
                .changed
                .wait_timeout(lines, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`, …) with `kill(1)`.
    ///
    /// # Panics
    ///
    /// Panics if `kill` cannot be run or fails.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    ///
    /// Panics with the output if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("process still owned");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                // Let the reader threads catch the last lines.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} still running after {within:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, self.output());
        }
    }
}

fn collect(pipe: impl Read + Send + 'static, output: Arc<Output>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            output.lines().push(line);
            output.changed.notify_all();
        }
    });
}
