//! Checks of the workspace's shape, run by `cargo test -p xtask`: dependency edges between our
//! crates point one way (ARCHITECTURE.md), and manifests follow the workspace conventions.

use std::path::{Path, PathBuf};

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::source::Source;

    use super::*;

    /// Which of our crates each crate may depend on (normal dependencies).
    const ALLOWED: &[(&str, &[&str])] = &[
        ("stellar-core", &[]),
        ("stellar-bus", &["stellar-core"]),
        ("stellar-rpc", &["stellar-core", "stellar-bus"]),
        ("stellar-cache", &["stellar-core", "stellar-bus"]),
        ("stellar-tasks", &["stellar-core", "stellar-bus"]),
        (
            "stellar-web",
            &[
                "stellar-core",
                "stellar-bus",
                "stellar-rpc",
                "stellar-cache",
                "stellar-tasks",
            ],
        ),
        (
            "stellar-node",
            &[
                "stellar-core",
                "stellar-bus",
                "stellar-rpc",
                "stellar-cache",
                "stellar-tasks",
                "stellar-web",
            ],
        ),
        (
            "stellar-cli",
            &[
                "stellar-core",
                "stellar-bus",
                "stellar-rpc",
                "stellar-cache",
                "stellar-tasks",
                "stellar-web",
                "stellar-node",
            ],
        ),
        ("stellar-testkit", &[]),
    ];

    /// Crates that must not depend on Redis, and the binaries allowed to use anyhow.
    const NO_REDIS: &[&str] = &[
        "stellar-core",
        "stellar-rpc",
        "stellar-node",
        "stellar-web",
        "stellar-testkit",
    ];
    const ANYHOW_OK: &[&str] = &["stellar-cli", "xtask"];

    fn manifests() -> BTreeMap<String, toml::Table> {
        let root = workspace_root();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
            .expect("crates/ exists")
            .map(|entry| entry.expect("dir entry").path())
            .collect();
        dirs.push(root.join("xtask"));
        dirs.push(root.join("tests"));
        dirs.into_iter()
            .map(|dir| {
                let text =
                    std::fs::read_to_string(dir.join("Cargo.toml")).expect("member manifest");
                let table: toml::Table = text.parse().expect("manifest is TOML");
                let name = table["package"]["name"]
                    .as_str()
                    .expect("package name")
                    .to_owned();
                (name, table)
            })
            .collect()
    }

    fn deps<'a>(manifest: &'a toml::Table, section: &str) -> Vec<&'a str> {
        manifest
            .get(section)
            .and_then(toml::Value::as_table)
            .map_or_else(Vec::new, |t| t.keys().map(String::as_str).collect())
    }

    #[test]
    fn crate_dependencies_point_one_way() {
        let manifests = manifests();
        for (name, allowed) in ALLOWED {
            let manifest = manifests
                .get(*name)
                .unwrap_or_else(|| panic!("{name} is missing from crates/"));
            for dep in deps(manifest, "dependencies")
                .into_iter()
                .filter(|d| d.starts_with("stellar-"))
            {
                assert!(
                    allowed.contains(&dep),
                    "{name} depends on {dep}: not an allowed edge (see ARCHITECTURE.md)"
                );
            }
        }
        let known: Vec<&str> = ALLOWED.iter().map(|(name, _)| *name).collect();
        for name in manifests
            .keys()
            .filter(|n| n.starts_with("stellar-") && *n != "stellar-tests")
        {
            assert!(
                known.contains(&name.as_str()),
                "new crate {name}: add its edges here and to ARCHITECTURE.md"
            );
        }
    }

    #[test]
    fn redis_and_anyhow_stay_where_they_belong() {
        for (name, manifest) in manifests() {
            let normal = deps(&manifest, "dependencies");
            if NO_REDIS.contains(&name.as_str()) {
                assert!(
                    !normal.iter().any(|d| d.contains("redis")),
                    "{name} must not depend on Redis"
                );
            }
            if !ANYHOW_OK.contains(&name.as_str()) {
                assert!(
                    !normal.contains(&"anyhow"),
                    "{name} is a library: use thiserror, not anyhow"
                );
            }
        }
    }

    #[test]
    fn members_inherit_lints_and_dependency_versions() {
        for (name, manifest) in manifests() {
            let lints = manifest
                .get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(toml::Value::as_bool);
            assert_eq!(lints, Some(true), "{name}: add `[lints] workspace = true`");
            for section in ["dependencies", "dev-dependencies"] {
                let Some(table) = manifest.get(section).and_then(toml::Value::as_table) else {
                    continue;
                };
                for (dep, spec) in table {
                    let inherited =
                        spec.get("workspace").and_then(toml::Value::as_bool) == Some(true);
                    assert!(
                        inherited,
                        "{name}: {dep} must be declared in [workspace.dependencies] and use `workspace = true`"
                    );
                }
            }
        }
    }

    /// Library files that may call `tokio::spawn` directly, and why: everything else spawns on
    /// the node's tracker (`Api::spawn`) so a shutdown waits for it.
    const SPAWN_OK: &[(&str, &str)] = &[
        (
            "crates/stellar-cli/src/control.rs",
            "the control socket of the process: accept loop and one task per local client, \
             they live as long as the process",
        ),
        (
            "crates/stellar-cli/src/node.rs",
            "the second-signal watcher that forces the process to exit",
        ),
        (
            "crates/stellar-cli/src/supervisor.rs",
            "the supervisor's output forwarders and child waiters, one per worker process",
        ),
        (
            "crates/stellar-tasks/src/coalesce.rs",
            "the enqueue coalescer of a `Tasks`, which may belong to no node (a client): its loop \
             ends when the `Tasks` is dropped, each combined call with its store call (bounded \
             by the command timeout), and every caller awaits its own answer",
        ),
    ];

    /// `path:line: text` of every library source line where `hit(source, index)` holds, in the
    /// files `skip(path)` does not leave out (paths relative to the workspace root).
    fn offending_lines(
        skip: impl Fn(&str) -> bool,
        hit: impl Fn(&Source, usize) -> bool,
    ) -> Vec<String> {
        let root = workspace_root();
        let mut found = Vec::new();
        for source in crate::source::library_sources(&root) {
            let path = source.path.strip_prefix(&root).unwrap_or(&source.path);
            let path = path.display().to_string();
            if skip(&path) {
                continue;
            }
            for index in (0..source.code.len()).filter(|&i| hit(&source, i)) {
                found.push(format!(
                    "{path}:{}: {}",
                    index + 1,
                    source.lines[index].trim()
                ));
            }
        }
        found
    }

    #[test]
    fn spawned_tasks_are_tracked() {
        let found = offending_lines(
            |path| SPAWN_OK.iter().any(|(ok, _)| *ok == path),
            |source, i| source.code[i].contains("tokio::spawn("),
        );
        assert!(
            found.is_empty(),
            "detached tokio::spawn (use Api::spawn / the component's tracker, or add the file \
             to SPAWN_OK with a reason): {found:#?}"
        );
    }

    /// No `redis::` type in a public signature outside the pool that wraps the client.
    #[test]
    fn no_redis_types_in_public_signatures() {
        let found = offending_lines(
            |path| path == "crates/stellar-bus/src/redis_pool.rs",
            |source, i| {
                let item = source.code[i].trim_start();
                let public = item.starts_with("pub ") || item.starts_with("pub fn");
                let end = signature_end(&source.code, i);
                public && source.code[i..=end].iter().any(|l| l.contains("redis::"))
            },
        );
        assert!(
            found.is_empty(),
            "public items naming redis:: types: {found:#?}"
        );
    }

    /// The last line of an item's signature: where its body or its `;` starts.
    fn signature_end(code: &[String], from: usize) -> usize {
        (from..code.len())
            .find(|&i| code[i].contains('{') || code[i].trim_end().ends_with(';'))
            .unwrap_or(from)
    }

    /// Redis key names are built in one schema module per crate (`keys.rs`): no `"stellar:…"`
    /// literal elsewhere in library code.
    #[test]
    fn redis_keys_are_built_in_the_schema_module() {
        // The raw line: the literal's contents are what matter here.
        let found = offending_lines(
            |path| path.ends_with("/keys.rs"),
            |source, i| {
                let code = source.lines[i].split("//").next().unwrap_or_default();
                code.split("\"stellar:")
                    .skip(1)
                    .any(|rest| !rest.starts_with(' '))
            },
        );
        assert!(found.is_empty(), "key names outside keys.rs: {found:#?}");
    }

    /// The shared helpers live once, in stellar-core (`time`, `sync`): no crate grows its own
    /// clock reading or poison-tolerant lock again (stellar-testkit depends on none of our
    /// crates, so it keeps its own).
    #[test]
    fn shared_helpers_are_written_once() {
        // unique.rs mixes the clock's nanoseconds into a hash: not a timestamp.
        let exempt = [
            "crates/stellar-core/",
            "crates/stellar-testkit/",
            "crates/stellar-bus/src/unique.rs",
        ];
        let copies = [
            ".duration_since(UNIX_EPOCH)",
            ".duration_since(std::time::UNIX_EPOCH)",
            "poisoned.into_inner()",
            "|p| p.into_inner()",
        ];
        let found = offending_lines(
            |path| exempt.iter().any(|prefix| path.starts_with(prefix)),
            |source, i| copies.iter().any(|copy| source.code[i].contains(copy)),
        );
        assert!(
            found.is_empty(),
            "use stellar_core::time / stellar_core::sync instead of a copy: {found:#?}"
        );
    }

    #[test]
    fn toolchain_is_pinned() {
        let text = std::fs::read_to_string(workspace_root().join("rust-toolchain.toml"))
            .expect("rust-toolchain.toml");
        assert!(text.contains("channel = \"1.95.0\""), "{text}");
    }
}
