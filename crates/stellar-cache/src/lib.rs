//! The shared cluster cache of a Stellar cluster.
//!
//! Values with TTLs, atomic locks with fencing tokens, lists and counters, shared by every node and by other clients, behind a narrow store trait with a Redis and an in-memory implementation.
//!
//! **Not built yet**: this crate is a placeholder in the workspace layout and has no public API.
//! Issue 4 fills it. Nothing in the `stellar` binary uses it until then.
