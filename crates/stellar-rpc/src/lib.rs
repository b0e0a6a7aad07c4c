//! Remote procedure calls on one node or on every node of a Stellar cluster.
//!
//! `do_cluster`: call a named method on every node, on one node by id, or on the node holding a connection, and wait for no reply, the first, or all of them, with a timeout. Methods are registered by name (an allow-list), carried over the authenticated bus of `stellar-bus`.
//!
//! **Not built yet**: this crate is a placeholder in the workspace layout and has no public API.
//! Issue 3 fills it. Nothing in the `stellar` binary uses it until then.
