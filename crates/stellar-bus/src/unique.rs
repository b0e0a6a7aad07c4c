//! Ids that no other caller in the cluster has, for lock tokens and task ids.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};
use stellar_core::NodeId;

/// Counts ids made in this process, so two in the same nanosecond still differ.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// `2 * bytes` hex characters (at most 64) unique to this node, process, call and moment; hashed
/// so they reveal none of that.
pub fn unique_token(node_id: &NodeId, bytes: usize) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = Sha256::new()
        .chain_update(node_id.as_str())
        .chain_update(std::process::id().to_be_bytes())
        .chain_update(n.to_be_bytes())
        .chain_update(nanos.to_be_bytes())
        .finalize();
    crate::signer::hex(&digest[..bytes.min(32)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_have_the_asked_length() {
        let node = NodeId::new("n").expect("valid id");
        let (a, b) = (unique_token(&node, 16), unique_token(&node, 16));
        assert_ne!(a, b);
        assert_eq!((a.len(), unique_token(&node, 12).len()), (32, 24));
    }
}
