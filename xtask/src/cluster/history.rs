//! What the logs of a run say happened to each task: Jepsen's queue checker, for tasks.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::Result;

/// The history of a run: what was attempted and acknowledged (from the client), and what ran and
/// completed (from every log of the scenario).
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Ids whose enqueue the client saw acknowledged.
    pub(crate) acked: BTreeSet<String>,
    /// Ids the client tried to enqueue, acknowledged or not.
    pub(crate) attempted: BTreeSet<String>,
    /// Accepted completions per id, from the workers' logs (`task completed`, logged at
    /// `stellar_tasks=debug` once Redis accepted the completion).
    pub(crate) completions: BTreeMap<String, usize>,
    /// Starts per id (`stellar.log task started`, by its message: the scenarios make it the id).
    pub(crate) starts: BTreeMap<String, usize>,
}

impl History {
    /// Reads every log in `dir` for the starts and accepted completions of a run whose client
    /// attempted `attempted` and saw `acked` acknowledged.
    pub(crate) fn read(
        dir: &Path,
        acked: BTreeSet<String>,
        attempted: BTreeSet<String>,
    ) -> Result<Self> {
        let mut history = Self {
            acked,
            attempted,
            ..Self::default()
        };
        for entry in std::fs::read_dir(dir)? {
            let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
            for line in text.lines() {
                if line.contains("stellar.log task started") {
                    if let Some(id) = field(line, "text") {
                        *history.starts.entry(id).or_default() += 1;
                    }
                } else if line.contains(" task completed")
                    && let Some(id) = field(line, "task_id")
                {
                    *history.completions.entry(id).or_default() += 1;
                }
            }
        }
        Ok(history)
    }

    /// Ids that started or completed but were never attempted, each once, in order.
    pub(crate) fn unexpected(&self) -> Vec<&String> {
        let unexpected: BTreeSet<&String> = self
            .starts
            .keys()
            .chain(self.completions.keys())
            .filter(|id| !self.attempted.contains(*id))
            .collect();
        unexpected.into_iter().collect()
    }
}

/// The value of ` name=value` in a log line, quotes trimmed.
fn field(line: &str, name: &str) -> Option<String> {
    line.split(&format!(" {name}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|value| value.trim_matches('"').to_owned())
}
