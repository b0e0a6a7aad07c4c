//! The cache page: keys by prefix with their TTL (at most [`MAX_KEYS`]), one key's contents as
//! text (at most [`MAX_VALUE_BYTES`]), and deleting a key.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::HeaderMap,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use stellar_cache::{DumpItem, Peeked};
use tracing::info;

use super::{AppState, authorised, may_read, may_see_user_data, refuse_user_data};
use crate::ActionError;

/// Keys one listing shows at most (the first by name).
const MAX_KEYS: usize = 200;
/// Matching keys one listing counts at most; past it the count says "more than".
const MAX_COUNTED_KEYS: usize = 10_000;
/// Bytes of a value (or list) shown at most.
const MAX_VALUE_BYTES: usize = 64 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/api/cache/keys", get(keys))
        .route("/dashboard/api/cache/value", get(value))
        .route("/dashboard/api/cache/delete", post(delete))
}

/// A key prefix in a query.
#[derive(Deserialize)]
struct Prefix {
    #[serde(default)]
    prefix: String,
}

/// A key in a query or a body.
#[derive(Deserialize)]
struct Key {
    key: String,
}

/// `GET /dashboard/api/cache/keys?prefix=`: the first [`MAX_KEYS`] keys starting with the
/// prefix (taken literally), with kind, TTL and size, and how many match, counted up to
/// [`MAX_COUNTED_KEYS`] (`"total_exact": false` past it, or when the bounded scan stopped).
async fn keys(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(Prefix { prefix }): Query<Prefix>,
) -> Result<Json<Value>, ActionError> {
    may_read(&shared, &headers)?;
    let page = shared
        .services
        .cache
        .browse(&prefix, MAX_KEYS, MAX_COUNTED_KEYS)
        .await
        .map_err(ActionError::internal)?;
    Ok(Json(json!({
        "prefix": prefix,
        "truncated": !page.complete || page.total > page.keys.len() as u64,
        "keys": page.keys,
        "total": page.total,
        "total_exact": page.complete,
        "max": MAX_KEYS,
    })))
}

/// `GET /dashboard/api/cache/value?key=`: the value (its JSON) or the list (one item's JSON a
/// line) at the key as text, cut at [`MAX_VALUE_BYTES`] (a list is read in bounded ranges up to
/// that; `"bytes": null` when not read whole); `"found": false` when absent. Values
/// are user data: only a live session reads them (403 on a read-only dashboard).
async fn value(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(Key { key }): Query<Key>,
) -> Result<Json<Value>, ActionError> {
    may_read(&shared, &headers)?;
    if !may_see_user_data(&shared, &headers) {
        return Err(refuse_user_data());
    }
    let peeked = shared
        .services
        .cache
        .peek_at_most(&key, MAX_VALUE_BYTES)
        .await
        .map_err(cache_error)?;
    let Some(Peeked {
        item,
        len,
        complete,
    }) = peeked
    else {
        return Ok(Json(json!({ "key": key, "found": false })));
    };
    let (kind, text, ttl_ms) = match item {
        DumpItem::Value { json, ttl_ms, .. } => ("value", json, ttl_ms),
        DumpItem::List { items, ttl_ms, .. } => ("list", items.join("\n"), ttl_ms),
    };
    // A list is read only up to about MAX_VALUE_BYTES: its size in bytes is then unknown.
    let bytes = text.len();
    Ok(Json(json!({
        "key": key,
        "found": true,
        "kind": kind,
        "ttl_ms": ttl_ms,
        "items": len,
        "bytes": complete.then_some(bytes),
        "text": cut(&text, MAX_VALUE_BYTES),
        "truncated": !complete || bytes > MAX_VALUE_BYTES,
    })))
}

/// `POST /dashboard/api/cache/delete {"key"}`: deletes the key (refused while another owner
/// holds its lock).
async fn delete(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let Key { key } = authorised(&shared, &headers, &body)?;
    let deleted = shared
        .services
        .cache
        .destroy(&key)
        .await
        .map_err(cache_error)?;
    info!(node_id = %shared.services.api.node_id(), deleted, "dashboard: delete cache key");
    Ok(Json(json!({ "key": key, "deleted": deleted })))
}

/// A cache error for the page: what the operator can fix is said, the rest stays in the logs.
fn cache_error(err: stellar_cache::Error) -> ActionError {
    match err {
        stellar_cache::Error::InvalidKey { .. } => ActionError::invalid("key", err.to_string()),
        stellar_cache::Error::Locked { .. } => ActionError::failed(err.to_string()),
        other => ActionError::internal(other),
    }
}

/// The first `max` bytes of `text`, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn values_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("aé", 2), "a", "é takes two bytes");
    }
}
