//! A small reader of our own Rust sources, for `cargo xtask metrics` and the tidy checks: it
//! blanks comments and the insides of string and char literals so that braces, `fn` and paths
//! are counted only where they are code. It is not a Rust parser; it is enough for code written
//! by `rustfmt`.

use std::path::{Path, PathBuf};

/// One source file: its lines as written, and the same lines with comments and literal contents
/// blanked (`code`). Lines of a trailing `#[cfg(test)]` module are left out of both.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) lines: Vec<String>,
    pub(crate) code: Vec<String>,
}

impl Source {
    pub(crate) fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let code_text = blank(&text);
        let mut code: Vec<String> = code_text.lines().map(str::to_owned).collect();
        code.resize(lines.len(), String::new());
        if let Some(cut) = test_module_start(&lines) {
            lines.truncate(cut);
            code.truncate(cut);
        }
        Self {
            path: path.to_owned(),
            lines,
            code,
        }
    }

    /// The line index of the brace that closes the block opened by the first `{` at or after
    /// line `from`, or `None` when a `;` ends the item first (a declaration without a body).
    pub(crate) fn block_end(&self, from: usize) -> Option<usize> {
        let mut depth = 0usize;
        let mut opened = false;
        for (index, line) in self.code.iter().enumerate().skip(from) {
            for ch in line.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if opened && depth == 0 {
                            return Some(index);
                        }
                    }
                    ';' if !opened => return None,
                    _ => {}
                }
            }
        }
        None
    }
}

/// Every `.rs` file under `crates/*/src`, sorted.
pub(crate) fn library_sources(root: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/ exists") {
        let src = entry.expect("dir entry").path().join("src");
        collect(&src, &mut files);
    }
    files.sort();
    files.iter().map(|path| Source::read(path)).collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// Where a `#[cfg(test)]` attribute directly followed by `mod` starts.
fn test_module_start(lines: &[String]) -> Option<usize> {
    lines.windows(2).position(|pair| {
        pair[0].trim() == "#[cfg(test)]" && pair[1].trim_start().starts_with("mod ")
    })
}

/// The name of the function an item line declares (`pub(crate) async fn name<...>(`).
pub(crate) fn fn_name(code_line: &str) -> Option<&str> {
    let mut rest = code_line.trim_start();
    if let Some(after) = rest.strip_prefix("pub") {
        rest = after.trim_start();
        if rest.starts_with('(') {
            rest = &rest[rest.find(')')? + 1..];
        }
        rest = rest.trim_start();
    }
    for qualifier in ["const ", "async ", "unsafe ", "extern \"C\" "] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest).trim_start();
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// `text` with comments removed and the contents of string and char literals replaced by
/// spaces; line breaks are kept so line numbers still match.
fn blank(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = skip_block_comment(&chars, i, &mut out);
        } else if c == '"' || (c == 'r' && matches!(next, Some('"' | '#')) && raw_start(&chars, i))
        {
            i = skip_string(&chars, i, &mut out);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&chars, i, &mut out);
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn raw_start(chars: &[char], i: usize) -> bool {
    let before_ok = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    before_ok && chars.get(j) == Some(&'"')
}

fn skip_block_comment(chars: &[char], mut i: usize, out: &mut String) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            if chars[i] == '\n' {
                out.push('\n');
            }
            i += 1;
        }
    }
    i
}

fn skip_string(chars: &[char], mut i: usize, out: &mut String) -> usize {
    let mut hashes = 0;
    let raw = chars[i] == 'r';
    if raw {
        i += 1;
        while chars[i] == '#' {
            hashes += 1;
            i += 1;
        }
    }
    out.push('"');
    i += 1;
    while i < chars.len() {
        let c = chars[i];
        if !raw && c == '\\' {
            i += 2;
            out.push_str("  ");
            continue;
        }
        if c == '"' && chars[i + 1..].iter().take(hashes).all(|&h| h == '#') {
            out.push('"');
            return i + 1 + hashes;
        }
        out.push(if c == '\n' { '\n' } else { ' ' });
        i += 1;
    }
    i
}

fn skip_char_or_lifetime(chars: &[char], i: usize, out: &mut String) -> usize {
    // 'x' or '\n' or '\u{..}' is a char literal; 'a (no closing quote soon) a lifetime.
    let close = if chars.get(i + 1) == Some(&'\\') {
        chars[i + 2..]
            .iter()
            .take(10)
            .position(|&c| c == '\'')
            .map(|p| i + 2 + p)
    } else if chars.get(i + 2) == Some(&'\'') {
        Some(i + 2)
    } else {
        None
    };
    match close {
        Some(end) => {
            out.push_str("' '");
            end + 1
        }
        None => {
            out.push('\'');
            i + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_in_strings_and_comments_are_not_code() {
        let text = "fn a() { let s = \"}{\"; // }\n let c = '}'; let r = r#\"}\"#; }\nfn b<'a>(x: &'a str) {}\n";
        let code = blank(text);
        assert_eq!(code.matches('{').count(), 2, "{code}");
        assert_eq!(code.matches('}').count(), 2, "{code}");
        assert!(code.contains("<'a>"));
    }

    #[test]
    fn function_names_with_qualifiers() {
        assert_eq!(
            fn_name("    pub(crate) async fn run_claimed("),
            Some("run_claimed")
        );
        assert_eq!(fn_name("pub const fn new() -> Self {"), Some("new"));
        assert_eq!(fn_name("fn main() {"), Some("main"));
        assert_eq!(fn_name("let f = fn_name(x);"), None);
    }
}
