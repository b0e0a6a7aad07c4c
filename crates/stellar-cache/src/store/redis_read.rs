//! How [`RedisCacheStore`](super::RedisCacheStore) reads one entry, on whichever connection: the
//! load script, which records the read time (and slides the TTL), or one atomic pipeline of plain
//! commands, which records nothing.

use redis::{ErrorKind, RedisError, Script, ServerError, Value};
use stellar_bus::{RedisConnection, TransportError};

use super::RawEntry;

/// The reply of `lua/load.lua`: value, created_at, previous read_at, PTTL, Redis time (ms).
type ScriptReply = Option<(String, String, String, i64, u64)>;

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
    conn: &mut RedisConnection,
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

/// Reads `entry` with one `MULTI`/`EXEC` of plain commands, recording nothing; `None` if this
/// Redis user may not run `MULTI` (an ACL rule without `+@transaction`).
///
/// `MULTI` and `EXEC` are sent as plain commands of one pipeline (written to the connection in one
/// piece, so nothing comes between them) and the replies decoded here: redis-rs's atomic pipeline
/// panics its connection's driver on a refused `MULTI` (1.8, debug builds), and hides the code of
/// an error inside `EXEC`'s reply (`WRONGTYPE` would not read as a wrong kind).
pub(crate) async fn plain(
    conn: &mut RedisConnection,
    entry: &str,
) -> redis::RedisResult<Option<Read>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors()
        .cmd("MULTI")
        .cmd("HMGET")
        .arg(entry)
        .arg("value")
        .arg("created_at")
        .arg("read_at")
        .cmd("PTTL")
        .arg(entry)
        .cmd("TIME")
        .cmd("EXEC");
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let [multi, queued @ .., exec] = replies.as_slice() else {
        return Err(unexpected("no reply to MULTI"));
    };
    if let Value::ServerError(err) = multi {
        return if err.code() == "NOPERM" {
            Ok(None)
        } else {
            Err(err.clone().into())
        };
    }
    // A command refused while queued (NOPERM, a wrong argument count) aborts the transaction:
    // its own error says more than EXECABORT.
    if let Some(Value::ServerError(err)) = queued.iter().find(|reply| is_error(reply)) {
        return Err(err.clone().into());
    }
    let Value::Array(results) = exec else {
        return Err(reply_error(exec, "EXEC did not reply with an array"));
    };
    let [fields, pttl, time] = results.as_slice() else {
        return Err(unexpected("EXEC replied with another number of results"));
    };
    let (json, created, read): (Option<String>, Option<String>, Option<String>) = decode(fields)?;
    let pttl: i64 = decode(pttl)?;
    let (secs, micros): (u64, u64) = decode(time)?;
    let now = secs.saturating_mul(1000).saturating_add(micros / 1000);
    let entry = json.map(|json| RawEntry {
        json,
        created_at_ms: created.as_deref().and_then(parse_ms),
        last_read_at_ms: read.as_deref().and_then(parse_ms),
        expires_at_ms: expires_at(now, pttl),
    });
    Ok(Some(Read {
        entry,
        pttl,
        recorded_at_ms: None,
    }))
}

fn is_error(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(_))
}

/// One result of `EXEC`: the error Redis sent in its place (`WRONGTYPE`, with its code), or the
/// result decoded.
fn decode<T: redis::FromRedisValue>(reply: &Value) -> redis::RedisResult<T> {
    if let Value::ServerError(err) = reply {
        return Err(err.clone().into());
    }
    Ok(redis::from_redis_value(reply.clone())?)
}

fn reply_error(reply: &Value, what: &'static str) -> RedisError {
    match reply {
        Value::ServerError(err) => err.clone().into(),
        _ => unexpected(what),
    }
}

fn unexpected(what: &'static str) -> RedisError {
    (ErrorKind::UnexpectedReturnType, what).into()
}

/// The errors Redis itself sent for `err` (none for an I/O, parse or timeout error), including
/// those inside a pipeline's or a transaction's reply.
fn server_errors(err: &TransportError) -> Vec<ServerError> {
    let TransportError::Backend { source, .. } = err else {
        return Vec::new();
    };
    source
        .downcast_ref::<RedisError>()
        .and_then(|err| err.clone().into_server_errors())
        .map(|errors| errors.iter().map(|(_, err)| err.clone()).collect())
        .unwrap_or_default()
}

/// Whether Redis answered `err` with an error of code `code` (`WRONGTYPE`, `NOPERM`…), alone or
/// inside a pipeline's or a transaction's reply.
pub(crate) fn has_server_code(err: &TransportError, code: &str) -> bool {
    server_errors(err).iter().any(|err| err.code() == code)
}

/// Whether a connection that failed with `err` still answered: anything but an I/O, parse or
/// timeout error (an error reply such as `WRONGTYPE`, `READONLY` or `LOADING`, or a reply of an
/// unexpected shape) means it did, and whatever Redis pushed before that reply has arrived.
pub(crate) fn answered(err: &TransportError) -> bool {
    match err {
        TransportError::Backend { source, .. } => source
            .downcast_ref::<RedisError>()
            .is_some_and(|err| !matches!(err.kind(), ErrorKind::Io | ErrorKind::Parse)),
        _ => false,
    }
}

fn expires_at(now_ms: u64, pttl: i64) -> Option<u64> {
    u64::try_from(pttl)
        .ok()
        .map(|pttl| now_ms.saturating_add(pttl))
}

pub(crate) fn parse_ms(text: &str) -> Option<u64> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(err: RedisError) -> TransportError {
        TransportError::Backend {
            op: "cache load",
            source: Box::new(err),
        }
    }

    fn server_error(reply: &[u8]) -> ServerError {
        match redis::parse_redis_value(reply) {
            Ok(Value::ServerError(err)) => err,
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn error_replies_are_answers_and_keep_their_code() {
        for reply in [
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n".as_slice(),
            b"-READONLY You can't write against a read only replica.\r\n",
            b"-LOADING Redis is loading the dataset in memory\r\n",
            b"-MASTERDOWN Link with MASTER is down\r\n",
        ] {
            let err = backend(server_error(reply).into());
            assert!(answered(&err), "{err:?}");
        }
        let wrongtype = server_error(b"-WRONGTYPE Operation against a key\r\n");
        assert!(has_server_code(&backend(wrongtype.into()), "WRONGTYPE"));

        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!answered(&backend(io.into())));
        let timeout = TransportError::Timeout {
            op: "cache load",
            after: std::time::Duration::from_secs(2),
        };
        assert!(!answered(&timeout));
        assert!(!has_server_code(&timeout, "WRONGTYPE"));
    }
}
