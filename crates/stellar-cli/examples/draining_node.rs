//! A user's own binary built on `stellar_cli::App`: the same CLI, plus one component.
//!
//! The component stands for in-flight work: when the node stops, it takes `DRAIN_MS`
//! milliseconds (default 300) to finish. Run it like `stellar`:
//!
//! ```text
//! cargo run -p stellar-cli --example draining_node -- run --id demo
//! ```

use std::{process::ExitCode, time::Duration};

use tracing::info;

fn main() -> ExitCode {
    let drain_ms: u64 = std::env::var("DRAIN_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(300);
    stellar_cli::App::new()
        .setup(move |node| {
            let cancel = node.api().cancellation_token();
            let node_id = node.api().node_id().clone();
            node.api().spawn(async move {
                cancel.cancelled().await;
                info!(%node_id, drain_ms, "draining");
                tokio::time::sleep(Duration::from_millis(drain_ms)).await;
                info!(%node_id, "drained");
            });
            info!(node_id = %node.api().node_id(), shared = node.is_shared(), "component started");
            Ok(())
        })
        .main()
}
