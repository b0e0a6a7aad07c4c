//! Asking Redis again after a lost reply, for operations that are safe to repeat (a claim with
//! its request id, a completion by its claim, an enqueue with an id): one budget and backoff
//! shape for all of them.

use std::time::Duration;

use tokio::time::Instant;

/// A retry budget: tries until `deadline`, pausing `pause` (doubling up to `max_pause`) between.
#[derive(Debug)]
pub(crate) struct Retry {
    deadline: Instant,
    pause: Duration,
    max_pause: Duration,
}

impl Retry {
    /// A budget of `budget` from now, first pause `first`, pauses at most `max_pause`.
    pub(crate) fn within(budget: Duration, first: Duration, max_pause: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
            pause: first,
            max_pause,
        }
    }

    /// Whether another try fits in the budget after the next pause.
    pub(crate) fn has_time(&self) -> bool {
        Instant::now() + self.pause < self.deadline
    }

    /// Leaves at most `left` of the budget.
    pub(crate) fn cap(&mut self, left: Duration) {
        self.deadline = self.deadline.min(Instant::now() + left);
    }

    /// Waits the next pause, then doubles it (up to the maximum).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(self.max_pause);
    }
}
