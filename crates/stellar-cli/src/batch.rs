//! `stellar tasks enqueue --stdin`: tasks as JSON lines, every line checked before any task is
//! enqueued.
//!
//! One task a line: `{"name": NAME, "args": ARGS}` with optional `"id"`, `"queue"`, `"in"` (ms
//! from now) and `"at"` (RFC 3339). Blank lines are skipped. A line that is not such an object,
//! names a task this program cannot enqueue, has both `"in"` and `"at"`, or an `"at"` that is not
//! RFC 3339 makes the whole batch fail, reported with its line number, before anything is written.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use anyhow::{Result, bail};
use serde::Deserialize;
use serde_json::Value;
use stellar_tasks::{BatchTask, EnqueueOptions, StoreError, Submitted, Tasks};

/// How many bad lines an error lists; the rest are counted.
const LISTED_ERRORS: usize = 10;

/// One line of input, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    name: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default, rename = "in")]
    in_ms: Option<u64>,
    #[serde(default)]
    at: Option<String>,
}

/// Parses and checks every line of `input`: tasks named in `known` only, times relative to
/// `now`. Returns the tasks in input order.
///
/// # Errors
///
/// Lists the bad lines by number (1-based); no task is returned when any line is bad.
pub(crate) fn parse(
    input: &str,
    known: &BTreeSet<String>,
    now: SystemTime,
) -> Result<Vec<BatchTask>> {
    let mut tasks = Vec::new();
    let mut errors = Vec::new();
    for (index, text) in input.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text, known, now) {
            Ok(task) => tasks.push(task),
            Err(err) => errors.push(format!("line {}: {err}", index + 1)),
        }
    }
    if !errors.is_empty() {
        let count = errors.len();
        let more = count.saturating_sub(LISTED_ERRORS);
        errors.truncate(LISTED_ERRORS);
        if more > 0 {
            errors.push(format!("and {more} more"));
        }
        let lines = if count == 1 { "line" } else { "lines" };
        bail!(
            "{count} bad {lines} on standard input, nothing enqueued:\n  {}",
            errors.join("\n  ")
        );
    }
    if tasks.is_empty() {
        bail!(
            "no task on standard input (one JSON object a line: {{\"name\": NAME, \"args\": ARGS}})"
        );
    }
    Ok(tasks)
}

/// One non-blank line, checked.
fn parse_line(text: &str, known: &BTreeSet<String>, now: SystemTime) -> Result<BatchTask> {
    let line: Line = serde_json::from_str(text).map_err(|err| {
        anyhow::anyhow!("not a task ({err}); expected {{\"name\": NAME, \"args\": ARGS}}")
    })?;
    if !known.contains(&line.name) {
        bail!(
            "unknown task {:?}: register it with Tasks::register (known here: {})",
            line.name,
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if line.id.as_deref() == Some("") || line.queue.as_deref() == Some("") {
        bail!("\"id\" and \"queue\" must not be empty");
    }
    let at = match (line.in_ms, &line.at) {
        (Some(_), Some(_)) => bail!("\"in\" and \"at\" both given; pick one"),
        (Some(ms), None) => Some(now + Duration::from_millis(ms)),
        (None, Some(at)) => Some(
            humantime::parse_rfc3339_weak(at)
                .map_err(|err| anyhow::anyhow!("\"at\" is not an RFC 3339 time ({err}): {at}"))?,
        ),
        (None, None) => None,
    };
    Ok(BatchTask {
        name: line.name,
        args: line.args,
        options: EnqueueOptions {
            queue: line.queue,
            id: line.id,
            replace: false,
        },
        at,
    })
}

/// Enqueues a checked batch in one atomic store step (on Redis, one script call): all of it or
/// none of it. A transient Redis error is retried (the ids are fixed first); when Redis never
/// confirms, the error says the outcome is unknown and how to find it out.
pub(crate) async fn enqueue_batch(tasks: &Tasks, batch: Vec<BatchTask>) -> Result<Vec<Submitted>> {
    // The first line without an id: only this batch can have added the id made up for it.
    let made_up = batch.iter().position(|task| task.options.id.is_none());
    match tasks.enqueue_many(batch).await {
        Err(stellar_tasks::Error::OutcomeUnknown { ids, source }) => {
            Err(unconfirmed(&ids, made_up, source))
        }
        other => Ok(other?),
    }
}

/// The error of a batch Redis did not confirm: enqueued whole or not at all. The id made up
/// for a line without one tells which (only this batch can have added it); when every line has
/// an id, running the input again is safe whatever happened.
fn unconfirmed(ids: &[String], made_up: Option<usize>, source: StoreError) -> anyhow::Error {
    let advice = match made_up.and_then(|line| ids.get(line)) {
        None => "running the same input again is safe: every line has an \"id\", so nothing is \
                 added twice"
            .to_owned(),
        Some(id) => format!(
            "look with `stellar tasks show {id}` (the id made up for the first line without \
             one); if it exists, do not run the same input again: its lines without an \"id\" \
             would be enqueued a second time. A request that timed out may still run later: \
             look again before rerunning"
        ),
    };
    anyhow::Error::new(source).context(format!(
        "Redis did not confirm the batch of {} task(s): it was enqueued whole or not at all, \
         nothing is known of which; {advice}",
        ids.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["stellar.log", "stellar.sleep"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_field_of_a_line_is_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let input = concat!(
            r#"{"name": "stellar.log", "args": {"message": "hi"}}"#,
            "\n\n",
            r#"{"name": "stellar.sleep", "args": {"ms": 5}, "id": "s-1", "queue": "slow", "in": 1500}"#,
            "\n",
            r#"{"name": "stellar.log", "at": "2026-11-28T09:00:00Z"}"#,
            "\n",
        );
        let batch = parse(input, &known(), now).expect("valid");
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].name, "stellar.log");
        assert_eq!(batch[0].args, serde_json::json!({"message": "hi"}));
        assert_eq!((batch[0].options.id.as_deref(), batch[0].at), (None, None));
        assert_eq!(batch[1].options.id.as_deref(), Some("s-1"));
        assert_eq!(batch[1].options.queue.as_deref(), Some("slow"));
        assert_eq!(batch[1].at, Some(now + Duration::from_millis(1500)));
        assert_eq!(batch[2].args, Value::Null);
        assert_eq!(
            batch[2].at,
            Some(humantime::parse_rfc3339("2026-11-28T09:00:00Z").expect("time"))
        );
    }

    #[test]
    fn bad_lines_are_reported_by_number_and_nothing_is_returned() {
        let input = [
            r#"{"name": "stellar.log", "args": 1}"#,
            "not json",
            r#"{"name": "no.such.task"}"#,
            r#"{"name": "stellar.log", "in": 5, "at": "2026-11-28T09:00:00Z"}"#,
            r#"{"name": "stellar.log", "at": "tomorrow"}"#,
            r#"{"name": "stellar.log", "extra": 1}"#,
            r#"{"args": 1}"#,
            r#"{"name": "stellar.log", "in": -5}"#,
        ]
        .join("\n");
        let err = parse(&input, &known(), SystemTime::now())
            .expect_err("bad lines")
            .to_string();
        assert!(
            err.starts_with("7 bad lines on standard input, nothing enqueued"),
            "{err}"
        );
        for line in 2..=8 {
            assert!(
                err.contains(&format!("line {line}: ")),
                "line {line}: {err}"
            );
        }
        assert!(!err.contains("line 1:"), "{err}");
        assert!(err.contains("register it with Tasks::register"), "{err}");
        assert!(err.contains("\"in\" and \"at\" both given"), "{err}");
        assert!(err.contains("not an RFC 3339 time"), "{err}");
    }

    #[test]
    fn an_unconfirmed_batch_says_how_to_find_out_and_whether_a_rerun_is_safe() {
        let lost = || {
            StoreError::Unavailable(stellar_bus::TransportError::Timeout {
                op: "task enqueue",
                after: Duration::from_secs(2),
            })
        };
        // Line 1 has the id "given"; line 2 had none: "n1-abc" was made up for it.
        let ids = ["given".to_owned(), "n1-abc".to_owned()];
        let mixed = format!("{:#}", unconfirmed(&ids, Some(1), lost()));
        assert!(
            mixed.starts_with(
                "Redis did not confirm the batch of 2 task(s): it was enqueued whole or not at all"
            ),
            "{mixed}"
        );
        assert!(mixed.contains("`stellar tasks show n1-abc`"), "{mixed}");
        assert!(mixed.contains("do not run the same input again"), "{mixed}");
        assert!(mixed.contains("timed out"), "the cause is kept: {mixed}");
        let all_ids = format!("{:#}", unconfirmed(&ids, None, lost()));
        assert!(
            all_ids.contains("running the same input again is safe"),
            "{all_ids}"
        );
    }

    #[test]
    fn an_empty_input_is_an_error() {
        let err = parse("\n \n", &known(), SystemTime::now()).expect_err("empty");
        assert!(
            err.to_string().contains("no task on standard input"),
            "{err}"
        );
    }

    #[test]
    fn only_the_first_errors_are_listed() {
        let input = "x\n".repeat(15);
        let err = parse(&input, &known(), SystemTime::now())
            .expect_err("bad")
            .to_string();
        assert!(
            err.contains("line 10: ") && !err.contains("line 11: "),
            "{err}"
        );
        assert!(err.contains("and 5 more"), "{err}");
    }
}
