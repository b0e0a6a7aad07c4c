//! Helpers for the benchmark examples that `cargo xtask bench` runs.

use crate::RedisServer;

/// The Redis to measure against: `STELLAR_BENCH_REDIS` if set (`cargo xtask bench` sets it), else
/// a server started for the run, returned so it lives as long as the caller needs it.
pub fn redis() -> (Option<RedisServer>, String) {
    match std::env::var("STELLAR_BENCH_REDIS") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = RedisServer::start();
            let url = server.url();
            (Some(server), url)
        }
    }
}

/// Prints one figure beside its baseline as a `BENCH {json}` line, which `cargo xtask bench`
/// collects. Names and units are plain identifiers, so no escaping is needed.
pub fn report(name: &str, unit: &str, value: f64, baseline_name: &str, baseline_value: f64) {
    let ratio = if baseline_value == 0.0 {
        0.0
    } else {
        value / baseline_value
    };
    println!(
        "BENCH {{\"name\":\"{name}\",\"unit\":\"{unit}\",\"value\":{value:.4},\"baseline_name\":\"{baseline_name}\",\"baseline_value\":{baseline_value:.4},\"ratio\":{ratio:.4}}}"
    );
}
