//! RPC metrics: calls this node made and served, by method and outcome, and call latency.

use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use stellar_core::{Metrics, metrics::duration_buckets};

use crate::{Error, RemoteError, Reply};

type MethodOutcome = [(&'static str, String); 2];
type MethodLabel = [(&'static str, String); 1];

/// The live RPC families of one node.
#[derive(Debug, Clone)]
pub(crate) struct RpcMetrics {
    calls: Family<MethodOutcome, Counter>,
    duration: Family<MethodLabel, Histogram, fn() -> Histogram>,
    served: Family<MethodOutcome, Counter>,
}

impl RpcMetrics {
    /// The families, registered on `metrics`.
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let this = Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(duration_buckets())),
            served: Family::default(),
        };
        metrics.register(
            "stellar_rpc_calls",
            "RPC calls this node made, by method and outcome (ok, timeout, unknown_node, remote_error, error)",
            this.calls.clone(),
        );
        metrics.register(
            "stellar_rpc_call_duration_seconds",
            "Time from sending an RPC call to its result (replies gathered or timeout), by method",
            this.duration.clone(),
        );
        metrics.register(
            "stellar_rpc_served",
            "RPC calls this node answered, by method and outcome (ok, error, no_such_method)",
            this.served.clone(),
        );
        this
    }

    /// A call of `method` (a label: a method this node knows, else `other`) ended with `result`
    /// after `seconds`.
    pub(crate) fn called(&self, method: String, seconds: f64, result: &Result<Vec<Reply>, Error>) {
        let outcome = match result {
            Ok(replies) => replies_outcome(replies),
            Err(Error::Timeout { .. }) => "timeout",
            Err(Error::UnknownNode { .. } | Error::UnknownConnection { .. }) => "unknown_node",
            Err(Error::Remote { .. } | Error::NoSuchMethod { .. } | Error::InvalidArgs { .. }) => {
                "remote_error"
            }
            Err(_) => "error",
        };
        self.duration
            .get_or_create(&[("method", method.clone())])
            .observe(seconds);
        self.calls
            .get_or_create(&[("method", method), ("outcome", outcome.to_owned())])
            .inc();
    }

    /// This node answered a call of `method` (a label, as in [`RpcMetrics::called`]).
    pub(crate) fn served(&self, method: String, outcome: &'static str) {
        self.served
            .get_or_create(&[("method", method), ("outcome", outcome.to_owned())])
            .inc();
    }
}

/// The outcome of a call that got its replies: a node's error in any reply makes it
/// `remote_error`, else a node that did not answer makes it `timeout` (so a call of an unknown
/// method, whose node answered "no such method", is not `ok`).
fn replies_outcome(replies: &[Reply]) -> &'static str {
    let failed = |timeout: bool| {
        replies.iter().any(|reply| match &reply.result {
            Err(RemoteError::Timeout { .. }) => timeout,
            Err(_) => !timeout,
            Ok(_) => false,
        })
    };
    if failed(false) {
        "remote_error"
    } else if failed(true) {
        "timeout"
    } else {
        "ok"
    }
}
