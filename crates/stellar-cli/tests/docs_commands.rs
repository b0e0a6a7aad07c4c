//! Every `stellar …` command in the shell blocks (```sh, ```console, ```bash) of README.md and
//! docs/*.md, run as a reader would, against a real Redis: docs and binary cannot drift apart.
//!
//! Each file gets its own Redis and working directory. A line is run when it calls `stellar`
//! (`cargo run -p stellar-cli --` counts as `stellar`); other lines (`redis-server`, `curl`,
//! `cargo xtask`) are skipped, except `export`s, which hold for the rest of the file. Lines run
//! through `sh` with the test's `stellar` first on `PATH`, so quotes, pipes and redirections work
//! as in a terminal. Machine-specific values are the test's: every Redis URL becomes the file's
//! Redis, an absolute `--pid-file` goes to the working directory, and nodes serve no HTTP.
//! `STELLAR_REDIS_URL` and `STELLAR_SERVER_TOKEN` start as a reader following the docs would have
//! them (see docs/cluster.md).
//!
//! A command must exit 0, unless its comment starts with `# fails:`. `stellar run` (a long-running
//! process) is started in the background, awaited until a node is ready, and stopped at the end of
//! the file. Placeholders: `[--flag]` is given, `<token>` is the previous command's output, and
//! `ID` is a task of the failed set the test makes for that command.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use stellar_testkit::{Process, RedisServer};

/// The token the docs export.
const DOCS_TOKEN: &str = "a long random secret";

/// One command line of a doc, ready to run.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    /// Where it is, `file:line`.
    at: String,
    /// The shell text, comment removed.
    text: String,
    /// Whether the doc says it fails (`# fails: …`).
    fails: bool,
    /// Whether it ends with `&`.
    background: bool,
}

/// The doc files: README.md and docs/*.md.
fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of `markdown`'s shell blocks worth running: `stellar` commands and `export`s.
fn lines(name: &str, markdown: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut in_shell = false;
    let mut pending = String::new();
    for (index, raw) in markdown.lines().enumerate() {
        let trimmed = raw.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_shell = !in_shell && matches!(info.trim(), "sh" | "console" | "bash");
            continue;
        }
        if !in_shell {
            continue;
        }
        let text = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        if let Some(start) = text.strip_suffix('\\') {
            pending.push_str(start);
            continue;
        }
        let whole = std::mem::take(&mut pending) + text;
        if let Some(line) = command(&format!("{name}:{}", index + 1), &whole) {
            out.push(line);
        }
    }
    out
}

/// `text` as a line to run, or `None` if it runs nothing of ours.
fn command(at: &str, text: &str) -> Option<Line> {
    let (code, comment) = split_comment(text);
    let code = code
        .replace("cargo run -p stellar-cli -- ", "stellar ")
        .trim()
        .to_owned();
    let (code, background) = match code.strip_suffix('&') {
        Some(code) => (code.trim().to_owned(), true),
        None => (code, false),
    };
    let calls_stellar =
        code.starts_with("export ") || code.split(['|', ' ']).any(|word| word == "stellar");
    if code.is_empty() || !calls_stellar {
        return None;
    }
    // `stellar run` runs until stopped.
    let background = background || code.contains("stellar run");
    Some(Line {
        at: at.to_owned(),
        text: code,
        fails: comment.trim_start().starts_with("fails:"),
        background,
    })
}

/// Splits a shell line at its comment: a `#` after a blank, outside quotes.
fn split_comment(text: &str) -> (&str, &str) {
    let (mut single, mut double, mut previous) = (false, false, ' ');
    for (index, c) in text.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => {
                return (&text[..index], &text[index + 1..]);
            }
            _ => {}
        }
        previous = c;
    }
    (text, "")
}

/// Replaces what is specific to the doc writer's machine with the test's.
fn localize(text: &str, redis_url: &str, dir: &Path) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut pid_file = false;
    for word in text.split(' ') {
        let word = if let Some(start) = word.find("redis://") {
            let end = word[start..]
                .find(['\'', '"'])
                .map_or(word.len(), |n| start + n);
            format!("{}{redis_url}{}", &word[..start], &word[end..])
        } else if pid_file && word.starts_with('/') {
            let name = Path::new(word).file_name().expect("a file name");
            dir.join(name).display().to_string()
        } else {
            word.to_owned()
        };
        pid_file = word == "--pid-file";
        words.push(word);
    }
    words.join(" ")
}

/// Runs the commands of one doc file.
struct Reader {
    redis: RedisServer,
    dir: tempfile::TempDir,
    exports: Vec<String>,
    background: Vec<(String, Process)>,
    /// The previous command's output, for `<token>`.
    previous: String,
    /// A node the test starts to fail tasks for `ID`, once needed.
    helper: Option<Process>,
    failed_tasks: u32,
}

impl Reader {
    fn new() -> Self {
        Self {
            redis: RedisServer::start(),
            dir: tempfile::tempdir().expect("temp dir"),
            exports: Vec::new(),
            background: Vec::new(),
            previous: String::new(),
            helper: None,
            failed_tasks: 0,
        }
    }

    /// `sh -c SCRIPT` with the doc reader's environment.
    fn shell(&self, script: &str) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_stellar"))
            .parent()
            .expect("bin dir");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("sh");
        support::scrub(&mut command);
        let exports = self.exports.join("\n");
        command
            .arg("-c")
            .arg(format!("{exports}\n{script}"))
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("STELLAR_REDIS_URL", self.redis.url())
            .env("STELLAR_SERVER_TOKEN", DOCS_TOKEN);
        command
    }

    fn run(&mut self, line: &Line) {
        let text = self.fill_in(&localize(&line.text, &self.redis.url(), self.dir.path()));
        eprintln!("{}: {text}", line.at);
        if text.starts_with("export ") {
            self.exports.push(text);
            return;
        }
        if line.background {
            self.start(line, &text);
            return;
        }
        let output = self.shell(&text).output().expect("run sh");
        let said = format!(
            "{}: `{text}` exited {:?}\nstdout:\n{}\nstderr:\n{}",
            line.at,
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(!output.status.success(), line.fails, "{said}");
        self.previous = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }

    /// Starts a long-running command and waits until it has a node ready.
    fn start(&mut self, line: &Line, text: &str) {
        let process = Process::spawn(&line.at, self.shell(&format!("exec env {text}")));
        process.wait_for_line(&["node ready"], Duration::from_secs(30));
        self.background.push((line.at.clone(), process));
    }

    /// `text` with its placeholders filled in.
    fn fill_in(&mut self, text: &str) -> String {
        let mut words: Vec<String> = Vec::new();
        for word in text.split(' ') {
            let word = match word {
                "<token>" => self.previous.clone(),
                "ID" => self.failed_task(),
                _ => match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                    Some(optional) => optional.to_owned(),
                    None => word.to_owned(),
                },
            };
            words.push(word);
        }
        words.join(" ")
    }

    /// The id of a fresh task in the failed set (`stellar.fail` on a node the test starts).
    fn failed_task(&mut self) -> String {
        if self.helper.is_none() {
            let command = self.shell("exec stellar run --id docs-helper");
            let helper = Process::spawn("docs-helper", command);
            helper.wait_for_line(&["node ready"], Duration::from_secs(30));
            self.helper = Some(helper);
        }
        self.failed_tasks += 1;
        let id = format!("docs-failed-{}", self.failed_tasks);
        let enqueue = format!("stellar tasks enqueue stellar.fail --id {id}");
        let enqueued = self.shell(&enqueue).output().expect("sh");
        assert!(enqueued.status.success(), "{enqueued:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = self
                .shell(&format!("stellar tasks show {id} --json"))
                .output()
                .expect("sh");
            if String::from_utf8_lossy(&shown.stdout).contains("\"failed\"") {
                return id;
            }
            assert!(Instant::now() < deadline, "{id} did not fail in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every long-running process gracefully.
    fn stop(&mut self) {
        for (at, mut process) in self
            .background
            .drain(..)
            .chain(self.helper.take().map(|p| ("docs-helper".to_owned(), p)))
        {
            if process.is_running() {
                process.signal("TERM");
                let status = process.wait_exit(Duration::from_secs(30));
                assert!(status.success(), "{at}: stopped with {status:?}");
            }
        }
    }
}

#[test]
fn every_stellar_command_in_the_docs_runs() {
    let mut ran = 0;
    for file in doc_files() {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let markdown = std::fs::read_to_string(&file).expect("read doc");
        let lines = lines(&name, &markdown);
        if lines.iter().all(|line| line.text.starts_with("export ")) {
            continue;
        }
        let mut reader = Reader::new();
        for line in &lines {
            reader.run(line);
            ran += 1;
        }
        reader.stop();
    }
    assert!(ran > 40, "only {ran} doc commands found");
}

#[test]
fn doc_lines_are_read_as_a_shell_reads_them() {
    let markdown = "\
text
```sh
redis-server --port 6380 &
export A=1 B='two words'
cargo run -p stellar-cli -- run --id n1 &
STELLAR_SERVER_TOKEN='x' \\
  stellar cache get 'a # not a comment'   # fails: absent
```
```text
stellar not a shell block
```
```console
$ stellar tasks show ID [--json]            # exit 1 if unknown
```
";
    let got = lines("doc.md", markdown);
    let texts: Vec<(&str, bool, bool)> = got
        .iter()
        .map(|l| (l.text.as_str(), l.fails, l.background))
        .collect();
    assert_eq!(
        texts,
        [
            ("export A=1 B='two words'", false, false),
            ("stellar run --id n1", false, true),
            (
                "STELLAR_SERVER_TOKEN='x' stellar cache get 'a # not a comment'",
                true,
                false
            ),
            ("stellar tasks show ID [--json]", false, false),
        ]
    );
    assert_eq!(got[1].at, "doc.md:5");
    let dir = Path::new("/tmp/t");
    assert_eq!(
        localize(
            "stellar run --redis redis://127.0.0.1:6379/0 --pid-file /run/stellar/api.pid",
            "redis://127.0.0.1:7000",
            dir
        ),
        "stellar run --redis redis://127.0.0.1:7000 --pid-file /tmp/t/api.pid"
    );
    assert_eq!(
        localize(
            "export STELLAR_REDIS_URL=redis://h:1 X='y'",
            "redis://127.0.0.1:7000",
            dir
        ),
        "export STELLAR_REDIS_URL=redis://127.0.0.1:7000 X='y'"
    );
}
