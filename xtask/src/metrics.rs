//! `cargo xtask metrics`: the figures issue 12 compares (library code under `crates/*/src`,
//! test modules left out): function length (p50, p90, the ten longest), the share of doc lines,
//! and the number of methods of each public trait.

use std::path::Path;

use crate::source::{Source, fn_name, library_sources};

/// One function: where it starts, its name and its length in lines (signature to closing brace).
#[derive(Debug)]
struct Function {
    at: String,
    name: String,
    lines: usize,
}

pub(crate) fn run(root: &Path) {
    let sources = library_sources(root);
    let mut functions: Vec<Function> = sources.iter().flat_map(|s| functions(root, s)).collect();
    functions.sort_by_key(|f| std::cmp::Reverse(f.lines));
    let mut lengths: Vec<usize> = functions.iter().map(|f| f.lines).collect();
    lengths.sort_unstable();
    println!(
        "functions: {}  p50 {} lines  p90 {} lines  max {}",
        lengths.len(),
        percentile(&lengths, 50),
        percentile(&lengths, 90),
        lengths.last().copied().unwrap_or(0)
    );
    println!("ten longest:");
    for function in functions.iter().take(10) {
        println!(
            "  {:>4}  {}  {}",
            function.lines, function.name, function.at
        );
    }
    let (docs, code) = doc_share(&sources);
    println!(
        "doc lines: {docs} of {code} non-blank lines ({:.1} %)",
        100.0 * docs as f64 / code.max(1) as f64
    );
    println!("public traits (methods):");
    for (at, name, methods) in sources.iter().flat_map(|s| traits(root, s)) {
        println!("  {methods:>3}  {name}  {at}");
    }
}

fn percentile(sorted: &[usize], p: usize) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn location(root: &Path, source: &Source, index: usize) -> String {
    let path = source.path.strip_prefix(root).unwrap_or(&source.path);
    format!("{}:{}", path.display(), index + 1)
}

fn functions(root: &Path, source: &Source) -> Vec<Function> {
    let mut found = Vec::new();
    for (index, line) in source.code.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        if let Some(end) = source.block_end(index) {
            found.push(Function {
                at: location(root, source, index),
                name: name.to_owned(),
                lines: end - index + 1,
            });
        }
    }
    found
}

fn doc_share(sources: &[Source]) -> (usize, usize) {
    let mut docs = 0;
    let mut non_blank = 0;
    for line in sources.iter().flat_map(|s| &s.lines) {
        let line = line.trim_start();
        if line.is_empty() {
            continue;
        }
        non_blank += 1;
        if line.starts_with("///") || line.starts_with("//!") {
            docs += 1;
        }
    }
    (docs, non_blank)
}

fn traits(root: &Path, source: &Source) -> Vec<(String, String, usize)> {
    let mut found = Vec::new();
    for (index, line) in source.code.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("pub trait ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let Some(end) = source.block_end(index) else {
            continue;
        };
        let methods = source.code[index + 1..end]
            .iter()
            .filter(|l| fn_name(l).is_some())
            .count();
        found.push((location(root, source, index), name, methods));
    }
    found
}
