//! Errors of configuration loading and of the node lifecycle.

use std::{path::PathBuf, time::Duration};

/// A configuration value could not be read or is not valid.
///
/// Every variant names the key, where its value came from, and the form that was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's description of the problem, with line and column.
        message: String,
    },
    /// The configuration file holds a key we do not know.
    #[error("unknown key `{key}` in config file {path} (known keys: {known})")]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The keys we know, comma-separated.
        known: String,
    },
    /// A value does not have the expected form.
    #[error("invalid value for `{key}` (from {origin}): expected {expected}, got {got}")]
    Invalid {
        /// The config key, e.g. `shutdown_timeout_ms`.
        key: &'static str,
        /// Where the value came from: the file, the env var or the flag.
        origin: String,
        /// The expected form, e.g. "a positive whole number of milliseconds".
        expected: &'static str,
        /// The rejected value, quoted, or `(hidden)` for secrets.
        got: String,
    },
    /// The node would join a shared backend with the well-known default token.
    #[error(
        "refusing to start with the default server token `change-me` on a shared backend \
         ({redis_url}): every node of the cluster must share a secret token; set it with \
         --server-token, the STELLAR_SERVER_TOKEN environment variable or `server_token` in the \
         config file"
    )]
    DefaultTokenOnSharedBackend {
        /// The Redis URL, with any password hidden.
        redis_url: String,
    },
}

/// The node did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Some tasks were still running when the shutdown deadline passed.
    #[error("{still_running} task(s) still running after the shutdown deadline of {after:?}")]
    DeadlineExceeded {
        /// The deadline that passed.
        after: Duration,
        /// How many tracked tasks had not finished.
        still_running: usize,
    },
}
