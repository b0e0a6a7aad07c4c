//! Reliable cluster tasks for a Stellar cluster.
//!
//! Tasks enqueued now, at a time, after a delay or on a recurring schedule, run once by whichever node is free, with leases, fencing tokens, retries and crash recovery, behind a narrow store trait with a Redis and an in-memory implementation.
//!
//! **Not built yet**: this crate is a placeholder in the workspace layout and has no public API.
//! Issue 5 fills it. Nothing in the `stellar` binary uses it until then.
