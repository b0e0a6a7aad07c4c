//! Enumeration and dump files: [`Cache::keys`], [`Cache::clear`], [`Cache::dump`],
//! [`Cache::restore`].

use std::{
    io::{BufRead, BufWriter, Write},
    path::Path,
};

use super::{Cache, check_key};
use crate::{
    Error, Result, keys,
    store::{DumpItem, ItemKind, KeyInfo},
};

impl Cache {
    /// Keys (values, counters and lists) matching the glob `pattern`, without the prefix.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>> {
        Ok(self.store().keys(pattern).await?)
    }

    /// Keys that start with `prefix` (taken literally), for an operator browsing the cache (the
    /// dashboard): the first `limit` by name with their kind, TTL and size (not their contents),
    /// and how many match. Bounded: matches are counted up to `count_max`; past it (or past a
    /// bounded scan on Redis) [`KeyPage::complete`] is false, the count is a lower bound and the
    /// listing the first `limit` by name of the keys read. Keys of a type the cache does not own
    /// (a string or set another client wrote under the prefix) are neither listed nor counted
    /// among those described.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn browse(&self, prefix: &str, limit: usize, count_max: usize) -> Result<KeyPage> {
        let pattern = format!("{}*", keys::escape_glob(prefix));
        let (mut names, complete) = self
            .store()
            .keys_bounded(&pattern, count_max.max(limit))
            .await?;
        let matched = names.len() as u64;
        names.sort();
        names.truncate(limit);
        let mut described = self.store().describe(&names).await?;
        described.sort_by(|a, b| a.key.cmp(&b.key));
        // Foreign types (and keys expired meanwhile) are left out of the listing: of the count too.
        let dropped = (names.len() - described.len()) as u64;
        Ok(KeyPage {
            keys: described,
            total: matched - dropped,
            complete,
        })
    }

    /// The value or list at `key` with its TTL, as a dump holds it; `None` if absent. Unlike
    /// [`Cache::load`], it records no read and takes either kind of item.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; fails if the store cannot be reached.
    pub async fn peek(&self, key: &str) -> Result<Option<DumpItem>> {
        check_key(key)?;
        let items = self.store().export(&keys::escape_glob(key)).await?;
        Ok(items.into_iter().find(|item| item.key() == key))
    }

    /// The value or list at `key` with its TTL, reading at most about `max_bytes` of a list: its
    /// items are read in growing ranges (16, 32, … 1,024 items a `LRANGE`) until they hold
    /// `max_bytes` (one item more than that at most) or the list ends. `None` if absent. Records
    /// no read. What the dashboard's view uses; [`Cache::peek`] reads a list whole.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; fails if the store cannot be reached.
    pub async fn peek_at_most(&self, key: &str, max_bytes: usize) -> Result<Option<Peeked>> {
        check_key(key)?;
        let Some(info) = self.store().describe(&[key.to_owned()]).await?.pop() else {
            return Ok(None);
        };
        if info.kind == ItemKind::Value {
            let item = self.peek(key).await?;
            return Ok(item.map(|item| Peeked {
                item,
                len: 1,
                complete: true,
            }));
        }
        let (mut items, mut bytes, mut chunk) = (Vec::new(), 0_usize, PEEK_FIRST_RANGE);
        'read: while bytes < max_bytes {
            let start = items.len() as u64;
            let range = self
                .store()
                .list_range(key, start, start + chunk - 1)
                .await?;
            let ended = (range.len() as u64) < chunk;
            for item in range {
                bytes += item.len() + 1;
                items.push(item);
                if bytes >= max_bytes {
                    break 'read;
                }
            }
            if ended {
                break;
            }
            chunk = (chunk * 2).min(PEEK_MAX_RANGE);
        }
        let len = info.size.max(items.len() as u64);
        Ok(Some(Peeked {
            complete: items.len() as u64 >= len,
            item: DumpItem::List {
                key: key.to_owned(),
                items,
                ttl_ms: info.ttl_ms,
            },
            len,
        }))
    }

    /// How many keys the cache holds.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn size(&self) -> Result<u64> {
        Ok(self.keys("*").await?.len() as u64)
    }

    /// Deletes every key matching `pattern` (locks are left alone); how many.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn clear(&self, pattern: &str) -> Result<u64> {
        Ok(self.store().clear(pattern).await?)
    }

    /// Writes every key (values, counters, lists) with its remaining TTL to `path`, one JSON item
    /// per line, sorted by key; how many. The file is replaced whole or not at all.
    ///
    /// # Errors
    ///
    /// [`Error::DumpFile`] if the file cannot be written.
    pub async fn dump(&self, path: &Path) -> Result<u64> {
        let mut items = self.store().export("*").await?;
        items.sort_by(|a, b| a.key().cmp(b.key()));
        let partial = path.with_extension("partial");
        write_items(&partial, &items).map_err(|source| dump_file(path, source))?;
        std::fs::rename(&partial, path).map_err(|source| dump_file(path, source))?;
        Ok(items.len() as u64)
    }

    /// Writes back what [`Cache::dump`] wrote, with the TTLs left at dump time; how many keys.
    ///
    /// # Errors
    ///
    /// [`Error::DumpFile`] or [`Error::DumpFormat`] before anything is written.
    pub async fn restore(&self, path: &Path) -> Result<u64> {
        let items = read_items(path)?;
        self.store().import(&items).await?;
        Ok(items.len() as u64)
    }
}

/// Items the first range of a bounded peek reads; each next range reads twice as many, up to
/// [`PEEK_MAX_RANGE`].
const PEEK_FIRST_RANGE: u64 = 16;
/// Items one range of a bounded peek reads at most.
const PEEK_MAX_RANGE: u64 = 1024;

/// What [`Cache::peek_at_most`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The value, or the list's first items (all of them when `complete`).
    pub item: DumpItem,
    /// How many items the list holds (1 for a value).
    pub len: u64,
    /// Whether `item` holds everything at the key.
    pub complete: bool,
}

/// What [`Cache::browse`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The first keys by name, described.
    pub keys: Vec<KeyInfo>,
    /// How many keys match (a lower bound when not `complete`).
    pub total: u64,
    /// Whether every match was counted; false when the count stopped at its bound.
    pub complete: bool,
}

fn dump_file(path: &Path, source: std::io::Error) -> Error {
    Error::DumpFile {
        path: path.to_owned(),
        source,
    }
}

/// Writes `items` to `path` as JSON lines and syncs the file.
fn write_items(path: &Path, items: &[DumpItem]) -> std::io::Result<()> {
    let mut file = BufWriter::new(std::fs::File::create(path)?);
    for item in items {
        serde_json::to_writer(&mut file, item)?;
        file.write_all(b"\n")?;
    }
    file.into_inner()
        .map_err(|err| err.into_error())?
        .sync_all()
}

/// The items of the dump file at `path`; blank lines are skipped.
fn read_items(path: &Path) -> Result<Vec<DumpItem>> {
    let file = std::fs::File::open(path).map_err(|source| dump_file(path, source))?;
    let mut items = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| dump_file(path, source))?;
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(&line).map_err(|source| Error::DumpFormat {
            path: path.to_owned(),
            line: index + 1,
            source,
        })?;
        items.push(item);
    }
    Ok(items)
}
