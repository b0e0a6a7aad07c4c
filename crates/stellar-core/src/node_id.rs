//! The identity of a node in the cluster.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The longest node id we accept, in bytes.
const MAX_LEN: usize = 128;

/// The unique name of a node within a cluster, e.g. `stellar-worker-1` or `web-3-4242`.
///
/// A node id is 1 to 128 bytes of printable characters with no whitespace, so it can appear in
/// Redis keys, log lines and command-line arguments without quoting.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// A string that is not a valid [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {id:?}: {reason}")]
pub struct InvalidNodeId {
    /// The rejected input.
    pub id: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl NodeId {
    /// Validates `id` as a node id.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidNodeId`] if `id` is empty, longer than 128 bytes, or contains whitespace
    /// or control characters.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidNodeId> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > MAX_LEN {
            Some("it is longer than 128 bytes")
        } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("it contains whitespace or control characters")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidNodeId { id, reason }),
            None => Ok(Self(id)),
        }
    }

    /// The default id of this process: `<hostname>-<pid>`.
    pub fn from_host() -> Self {
        let host: String = hostname()
            .chars()
            .filter(|c| !c.is_whitespace() && !c.is_control())
            .take(100)
            .collect();
        let host = if host.is_empty() {
            "stellar".to_owned()
        } else {
            host
        };
        Self(format!("{host}-{}", std::process::id()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// This machine's host name, or an empty string if it has none.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so ids line up in tables.
        f.pad(&self.0)
    }
}

impl FromStr for NodeId {
    type Err = InvalidNodeId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidNodeId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> Self {
        id.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_ids() {
        assert_eq!(
            NodeId::new("stellar-worker-1").map(String::from),
            Ok("stellar-worker-1".to_owned())
        );
        assert!(NodeId::new("ünïcode:node/1").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_whitespace_ids() {
        assert_eq!(NodeId::new("").map_err(|e| e.reason), Err("it is empty"));
        assert!(NodeId::new("a".repeat(129)).is_err());
        assert!(NodeId::new("a".repeat(128)).is_ok());
        assert!(NodeId::new("two words").is_err());
        assert!(NodeId::new("tab\there").is_err());
    }

    #[test]
    fn host_default_is_hostname_dash_pid() {
        let id = NodeId::from_host();
        assert!(
            id.as_str().ends_with(&format!("-{}", std::process::id())),
            "{id}"
        );
        assert!(NodeId::new(id.as_str()).is_ok());
    }

    #[test]
    fn deserialising_validates() {
        let parsed: Result<NodeId, _> = toml::Value::String("bad id".into()).try_into();
        assert!(parsed.is_err());
    }
}
