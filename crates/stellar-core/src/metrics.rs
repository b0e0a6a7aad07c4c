//! A node's metrics: one Prometheus registry per node, served as `GET /metrics`.
//!
//! Every component registers its own families on the node's [`Metrics`] (reached through
//! [`Api::metrics`](crate::Api::metrics)) when it is built: live counters, gauges and histograms
//! of [`prometheus_client`], or values read at scrape time from a snapshot it already keeps
//! ([`Metrics::snapshot`]). [`Metrics::encode`] writes the Prometheus text exposition
//! (version 0.0.4).
//!
//! Names carry their base unit (`_seconds`, `_bytes`); counters are registered without the
//! `_total` suffix, which the encoder adds. Label values must be bounded: queue and task names,
//! reasons, methods, never task or connection ids.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

pub use prometheus_client;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Metric, Registry},
};

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The bucket bounds, in seconds, of every duration histogram (task runs, queue waits, RPC
/// calls, HTTP requests, lock waits): a millisecond to five minutes.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// [`DURATION_BUCKETS`], for `Histogram::new`.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    DURATION_BUCKETS.into_iter()
}

/// The node's metric registry. Cloning it is cheap: clones share the registry.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a live metric (a counter, gauge, histogram or a family of them) under `name`
    /// (with its unit, without `_total`), described by `help`. Keep a clone of `metric` to
    /// update it.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        crate::sync::lock(&self.registry).register(name, help, metric);
    }

    /// Registers a collector that writes its families at each scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        crate::sync::lock(&self.registry).register_collector(Box::new(collector));
    }

    /// Registers families whose values are read at each scrape: `read` adds them to the
    /// [`Samples`] it is given. For numbers a component already keeps (stats snapshots).
    pub fn snapshot(&self, read: impl Fn(&mut Samples) + Send + Sync + 'static) {
        self.register_collector(SnapshotCollector {
            read: Box::new(read),
        });
    }

    /// Every registered family in the Prometheus text format (see [`METRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = crate::sync::lock(&self.registry);
        // Writing to a String cannot fail; a collector's error would only cut the output short.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// Families read at scrape time: see [`Metrics::snapshot`].
#[derive(Debug, Default)]
pub struct Samples {
    families: Vec<SampleFamily>,
}

#[derive(Debug)]
struct SampleFamily {
    name: String,
    help: String,
    kind: MetricType,
    samples: Vec<(Vec<(String, String)>, Value)>,
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl Samples {
    /// Adds one sample of the counter `name` (without `_total`) with `labels`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.push(name, help, MetricType::Counter, labels, Value::Int(value));
    }

    /// Adds one sample of the gauge `name` with `labels`.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, MetricType::Gauge, labels, Value::Float(value));
    }

    fn push(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
        value: Value,
    ) {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(family) => family.samples.push((labels, value)),
            None => self.families.push(SampleFamily {
                name: name.to_owned(),
                help: help.to_owned(),
                kind,
                samples: vec![(labels, value)],
            }),
        }
    }
}

struct SnapshotCollector {
    read: Box<dyn Fn(&mut Samples) + Send + Sync>,
}

impl fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCollector").finish_non_exhaustive()
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let mut samples = Samples::default();
        (self.read)(&mut samples);
        for family in &samples.families {
            let mut metric =
                encoder.encode_descriptor(&family.name, &family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match (family.kind, value) {
                    (MetricType::Counter, Value::Int(v)) => ConstCounter::new(*v).encode(sample)?,
                    (MetricType::Counter, Value::Float(v)) => {
                        ConstCounter::new(*v).encode(sample)?
                    }
                    (_, Value::Int(v)) => ConstGauge::new(*v as i64).encode(sample)?,
                    (_, Value::Float(v)) => ConstGauge::new(*v).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn live_and_snapshot_families_are_encoded_as_prometheus_text() {
        let metrics = Metrics::new();
        let counter = Counter::<u64>::default();
        metrics.register("things_done", "Things done", counter.clone());
        counter.inc_by(3);
        metrics.snapshot(|out| {
            out.counter("rejects", "Rejected", &[("reason", "a")], 1);
            out.counter("rejects", "Rejected", &[("reason", "b")], 2);
            out.gauge("depth", "Depth", &[], 4.5);
        });
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE things_done_total counter\nthings_done_total 3\n"),
            "{text}"
        );
        assert!(text.contains("rejects_total{reason=\"a\"} 1\n"), "{text}");
        assert!(text.contains("rejects_total{reason=\"b\"} 2\n"), "{text}");
        assert_eq!(
            text.matches("# TYPE rejects_total counter").count(),
            1,
            "{text}"
        );
        assert!(text.contains("depth 4.5\n"), "{text}");
    }
}
