//! Errors of the task queue.

use stellar_bus::TransportError;

/// A task operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No task of that name is registered here.
    #[error("unknown task {name:?}: register it with Tasks::register before enqueueing")]
    UnknownTask {
        /// The name asked for.
        name: String,
    },
    /// The arguments could not be encoded as JSON.
    #[error("cannot encode the arguments of task {name:?}")]
    Encode {
        /// The task name.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A task id or queue name is empty or too long.
    #[error("invalid {what} {value:?}: it must be 1 to 256 bytes without whitespace")]
    Invalid {
        /// "task id" or "queue".
        what: &'static str,
        /// The rejected value, cut to 64 characters.
        value: String,
    },
    /// The task is running: a worker holds it.
    #[error("task {id} is running; wait for it or let its lease expire")]
    Running {
        /// The task id.
        id: String,
    },
    /// The store failed.
    #[error("task store failed")]
    Store(#[from] TransportError),
}

/// A task result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a task handler may fail with.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
