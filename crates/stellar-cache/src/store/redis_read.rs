//! How [`RedisCacheStore`](super::RedisCacheStore) reads one entry, on whichever connection: the
//! load script, which records the read time (and slides the TTL), or one atomic pipeline of plain
//! commands, which records nothing.

use redis::{Script, aio::MultiplexedConnection};

use super::RawEntry;

/// The reply of `lua/load.lua`: value, created_at, previous read_at, PTTL, Redis time (ms).
type ScriptReply = Option<(String, String, String, i64, u64)>;

/// The reply of [`plain`]: `HMGET value created_at read_at`, `PTTL`, `TIME` (s, µs).
type PlainReply = (
    (Option<String>, Option<String>, Option<String>),
    i64,
    (u64, u64),
);

/// One read: what the caller gets, and what a near cache may keep.
#[derive(Debug)]
pub(crate) struct Read {
    /// The entry (`None`: absent), its `last_read_at` the read before this one.
    pub(crate) entry: Option<RawEntry>,
    /// The entry's PTTL in ms when it was read (negative: no TTL).
    pub(crate) pttl: i64,
    /// When this read was recorded (Redis time, ms), if it was.
    pub(crate) recorded_at_ms: Option<u64>,
}

impl Read {
    /// The entry as later reads from memory should see it: last read by this read, if recorded.
    pub(crate) fn kept(&self) -> Option<RawEntry> {
        let mut entry = self.entry.clone()?;
        if let Some(at) = self.recorded_at_ms {
            entry.last_read_at_ms = Some(at);
        }
        Some(entry)
    }
}

/// Reads `entry` and records the read time; with `slide` (ms, or ""), also resets the TTL. The
/// script ends with a read of the key (`PTTL`), so a tracking connection tracks the key again
/// after the script's own write.
pub(crate) async fn recording(
    conn: &mut MultiplexedConnection,
    script: &Script,
    entry: &str,
    slide: &str,
) -> redis::RedisResult<Read> {
    let reply: ScriptReply = script.key(entry).arg(slide).invoke_async(conn).await?;
    Ok(match reply {
        None => Read {
            entry: None,
            pttl: -2,
            recorded_at_ms: None,
        },
        Some((json, created, read, pttl, now)) => Read {
            entry: Some(RawEntry {
                json,
                created_at_ms: parse_ms(&created),
                last_read_at_ms: parse_ms(&read),
                expires_at_ms: expires_at(now, pttl),
            }),
            pttl,
            recorded_at_ms: Some(now),
        },
    })
}

/// Reads `entry` with one `MULTI`/`EXEC` of plain commands, recording nothing.
pub(crate) async fn plain(
    conn: &mut MultiplexedConnection,
    entry: &str,
) -> redis::RedisResult<Read> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("HMGET")
        .arg(entry)
        .arg("value")
        .arg("created_at")
        .arg("read_at")
        .cmd("PTTL")
        .arg(entry)
        .cmd("TIME");
    let reply: PlainReply = pipe.query_async(conn).await?;
    let ((json, created, read), pttl, (secs, micros)) = reply;
    let now = secs * 1000 + micros / 1000;
    let entry = json.map(|json| RawEntry {
        json,
        created_at_ms: created.as_deref().and_then(parse_ms),
        last_read_at_ms: read.as_deref().and_then(parse_ms),
        expires_at_ms: expires_at(now, pttl),
    });
    Ok(Read {
        entry,
        pttl,
        recorded_at_ms: None,
    })
}

fn expires_at(now_ms: u64, pttl: i64) -> Option<u64> {
    u64::try_from(pttl).ok().map(|pttl| now_ms + pttl)
}

pub(crate) fn parse_ms(text: &str) -> Option<u64> {
    text.parse().ok()
}
