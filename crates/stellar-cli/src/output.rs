//! What client commands print: aligned tables for people, JSON for scripts (`--json`).
//!
//! Every `--json` uses the same field names for the same things: `id` for the object's own id,
//! `node` for the node concerned (a reply's, a task's, a worker's), `error` for an error's text,
//! and times as `<what>_at_ms` in ms since the Unix epoch.

use std::{
    io::Write,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::Result;
use serde::Serialize;

/// Writes `text` and a newline to stdout. A closed stdout (`stellar cache keys | head -1`) ends
/// the output quietly instead of panicking as `println!` does.
pub(crate) fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// Prints `value` as pretty JSON.
pub(crate) fn json(value: &impl Serialize) -> Result<()> {
    line(&serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A text table: a header row and aligned columns, two spaces apart.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles, every column aligned left.
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            right: vec![false; header.len()],
            rows: Vec::new(),
        }
    }

    /// Aligns the columns at `columns` (numbers) right.
    pub(crate) fn right(mut self, columns: &[usize]) -> Self {
        for &column in columns {
            self.right[column] = true;
        }
        self
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(printable).collect());
    }

    /// The table as text, one line per row, the last column not padded.
    pub(crate) fn render(&self) -> String {
        let columns = self.header.len();
        let cell = |row: &[String], c: usize| row.get(c).map_or("", String::as_str).to_owned();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let all: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                all.iter()
                    .map(|row| cell(row, c).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in all {
            let mut text = String::new();
            for (c, width) in widths.iter().enumerate() {
                let value = cell(row, c);
                let pad = " ".repeat(width - value.chars().count());
                let last = c + 1 == columns;
                match (self.right[c], last) {
                    (true, _) => text.push_str(&format!("{pad}{value}")),
                    (false, true) => text.push_str(&value),
                    (false, false) => text.push_str(&format!("{value}{pad}")),
                }
                if !last {
                    text.push_str("  ");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        let text = self.render();
        line(text.trim_end_matches('\n'));
    }
}

/// A time in ms since the Unix epoch as RFC 3339 with milliseconds; `-` for none.
pub(crate) fn time_ms(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            let at = UNIX_EPOCH + Duration::from_millis(ms);
            humantime::format_rfc3339_millis(at).to_string()
        }
        None => "-".to_owned(),
    }
}

/// A duration in ms as people read it (`1s 250ms`); `-` for none.
pub(crate) fn duration_ms(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| humantime::format_duration(Duration::from_millis(ms)).to_string(),
    )
}

/// `text` safe for a terminal: control characters (escape sequences a stored record may carry,
/// line breaks that would break a table) shown escaped instead of acted on.
pub(crate) fn printable(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_one_is_not_padded() {
        let mut table = Table::new(&["ID", "PID", "NAME"]).right(&[1]);
        table.row(vec!["n1".into(), "7".into(), "a".into()]);
        table.row(vec!["node-22".into(), "12345".into(), "longer name".into()]);
        table.row(vec!["n3".into()]);
        assert_eq!(
            table.render(),
            "ID         PID  NAME\n\
             n1           7  a\n\
             node-22  12345  longer name\n\
             n3\n"
        );
    }

    #[test]
    fn times_and_durations_read_as_text() {
        assert_eq!(time_ms(Some(1_000)), "1970-01-01T00:00:01.000Z");
        assert_eq!(time_ms(None), "-");
        assert_eq!(duration_ms(Some(1_250)), "1s 250ms");
    }

    #[test]
    fn control_characters_are_shown_not_acted_on() {
        assert_eq!(printable("plain".into()), "plain");
        assert_eq!(printable("a\u{1b}[2Jb\nc".into()), "a\\u{1b}[2Jb\\nc");
    }
}
