//! Errors of the task queue: [`Error`] for users of [`crate::Tasks`], [`StoreError`] for stores.

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
    /// A task id, schedule id or queue name is empty or too long.
    #[error("invalid {what} {value:?}: it must be 1 to 256 bytes without whitespace")]
    Invalid {
        /// "task id", "schedule id" or "queue".
        what: &'static str,
        /// The rejected value, cut to 64 characters.
        value: String,
    },
    /// A schedule's recurrence cannot run: a cron expression that does not parse or never
    /// matches, or a time zone that is not known here.
    #[error("{reason}")]
    InvalidRecurrence {
        /// What is wrong, naming the bad part.
        reason: String,
    },
    /// A schedule's record does not carry a valid signature, so it is not run
    /// ([`crate::Tasks::run_schedule_now`]): it was written without the server token, or signed
    /// with a token no longer accepted.
    #[error("schedule {id:?} does not verify with this token: schedule it again to sign it")]
    UnverifiedSchedule {
        /// The schedule's id.
        id: String,
    },
    /// The task is running: a worker holds it.
    #[error("task {id} is running; wait for it or let its lease expire")]
    Running {
        /// The task id.
        id: String,
    },
    /// A task of a batch is invalid; nothing of the batch was written.
    #[error("task {index} of the batch (counting from 0) is invalid; nothing was enqueued")]
    InBatch {
        /// Its position in the batch, from 0.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// A batch is larger than one call takes: more than [`crate::MAX_BATCH`] tasks, or more than
    /// [`crate::MAX_BATCH_BYTES`] of arguments. Nothing was written; split it.
    #[error("a batch of {len} {unit} is too large: at most {max} {unit} go in one call; split it")]
    BatchTooLarge {
        /// The batch's size, in `unit`.
        len: usize,
        /// The most one call takes, in `unit`.
        max: usize,
        /// What is counted: `tasks` or `bytes of arguments`.
        unit: &'static str,
    },
    /// The store did not confirm an enqueue, even after retrying within `enqueue_retry`, and a
    /// try may have run (a timeout or a lost connection, not a refused connection): the tasks may
    /// or may not have been enqueued. A batch is one atomic step, so it is all of them or none:
    /// look up an id this call made up ([`crate::Tasks::show`]; only this call can have added
    /// it, while a given id may have existed before) to know which, and look again later, since
    /// a request that timed out may still run. Enqueueing again with the same ids adds none
    /// twice (fresh ids would).
    #[error(
        "the task store did not confirm the enqueue of {} task(s): all or none of them may have \
         been enqueued; look one of them up before enqueueing them again (with the same ids, a \
         second enqueue adds none twice)",
        .ids.len()
    )]
    OutcomeUnknown {
        /// The ids of the tasks, in order (those made up by the call included).
        ids: Vec<String>,
        /// The last error of the store.
        #[source]
        source: StoreError,
    },
    /// The store failed.
    #[error("task store failed")]
    Store(#[from] StoreError),
}

/// A task result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a task store fails with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time (connection lost or refused, a
    /// timeout, Redis loading its data): the step may or may not have run, and asking again is
    /// safe for the idempotent ones.
    #[error("task store unavailable")]
    Unavailable(#[source] TransportError),
    /// The backend refused the step (a script error, a wrong key type, an error reply).
    #[error("task store refused the operation")]
    Refused(#[source] TransportError),
    /// The step ran, but fewer replicas than asked acknowledged it in time
    /// (`task_enqueue_wait_replicas`): a failover now could lose it. Asking again is safe for the
    /// idempotent steps (an enqueue adds nothing twice), and is what the retry of an enqueue does.
    #[error("only {acked} of {wanted} replica(s) acknowledged the write in time")]
    NotReplicated {
        /// How many replicas were asked for.
        wanted: usize,
        /// How many acknowledged.
        acked: u64,
    },
    /// The backend answered with a reply of the wrong shape.
    #[error("malformed {op} reply: {detail}")]
    Malformed {
        /// The step, e.g. `task claim`.
        op: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl StoreError {
    /// Whether this is a connection blip worth retrying, not a refused or malformed step. Retry
    /// only what is idempotent: a lost reply may mean the step ran.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::NotReplicated { .. })
    }
}

impl From<TransportError> for StoreError {
    fn from(err: TransportError) -> Self {
        if err.is_transient() {
            Self::Unavailable(err)
        } else {
            Self::Refused(err)
        }
    }
}

/// What a task handler may fail with: any error (the attempt fails and is retried after the
/// definition's backoff while attempts remain), or a [`TaskError`] that says otherwise.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A handler's failure that decides what happens next, instead of the definition's backoff:
///
/// ```
/// # use std::time::Duration;
/// use stellar_tasks::{HandlerError, TaskError};
///
/// fn charge(amount: i64, gateway_busy: bool) -> Result<(), HandlerError> {
///     if amount <= 0 {
///         // Retrying cannot help: straight to the failed set.
///         return Err(TaskError::abort(format!("invalid amount {amount}")).into());
///     }
///     if gateway_busy {
///         return Err(TaskError::retry_after(Duration::from_secs(30), "gateway busy").into());
///     }
///     Ok(())
/// }
/// # assert!(charge(0, false).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    message: String,
    then: AfterFailure,
}

/// What follows a [`TaskError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// No retry: the task goes to the failed set whatever attempts remain.
    Abort,
    /// Retry after this delay (if attempts remain), instead of the backoff.
    RetryAfter(std::time::Duration),
}

impl TaskError {
    /// Fails the task for good: it goes to the failed set with `message`, whatever attempts
    /// remain (bad input, a permanent refusal).
    pub fn abort(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            then: AfterFailure::Abort,
        }
    }

    /// Fails this attempt and runs the next one after `delay` instead of the definition's
    /// backoff (a rate limit that says when to come back); out of attempts, the task fails. A
    /// delay longer than [`crate::MAX_RETRY_DELAY`] (30 days) is taken as that.
    pub fn retry_after(delay: std::time::Duration, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            then: AfterFailure::RetryAfter(delay.min(crate::MAX_RETRY_DELAY)),
        }
    }

    pub(crate) fn then(&self) -> AfterFailure {
        self.then
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_connection_blips_are_transient() {
        let timeout = TransportError::Timeout {
            op: "EVALSHA",
            after: Duration::from_secs(1),
        };
        assert!(StoreError::from(timeout).is_transient());
        let refused = TransportError::Backend {
            op: "EVALSHA",
            source: "ERR wrong number of arguments".into(),
        };
        assert!(!StoreError::from(refused).is_transient());
        let malformed = StoreError::Malformed {
            op: "task claim",
            detail: "3 entries".into(),
        };
        assert!(!malformed.is_transient());
    }

    #[test]
    fn a_retry_delay_is_at_most_thirty_days() {
        let forever = TaskError::retry_after(Duration::MAX, "later");
        assert_eq!(
            forever.then(),
            AfterFailure::RetryAfter(crate::MAX_RETRY_DELAY)
        );
        assert_eq!(crate::MAX_RETRY_DELAY, Duration::from_secs(30 * 86_400));
        let soon = TaskError::retry_after(Duration::from_secs(5), "soon");
        assert_eq!(
            soon.then(),
            AfterFailure::RetryAfter(Duration::from_secs(5))
        );
    }
}
