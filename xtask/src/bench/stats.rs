//! Rounds of samples folded into figures: per figure name, the median with min–max of our value,
//! of its baseline and of the per-round ratio, every round kept for `results.json`.

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// One figure measured once, beside its baseline measured in the same run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) unit: String,
    pub(crate) value: f64,
    pub(crate) baseline_name: String,
    pub(crate) baseline_value: f64,
}

impl Sample {
    pub(crate) fn new(
        name: &str,
        unit: &str,
        value: f64,
        baseline_name: &str,
        baseline_value: f64,
    ) -> Self {
        Self {
            name: name.to_owned(),
            unit: unit.to_owned(),
            value,
            baseline_name: baseline_name.to_owned(),
            baseline_value,
        }
    }

    /// A sample from an example's `BENCH {json}` line (a missing baseline reads as none: 0).
    pub(crate) fn parse(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)?;
        let text = |field: &str| value[field].as_str().unwrap_or_default().to_owned();
        Ok(Self {
            name: value["name"].as_str().context("a name")?.to_owned(),
            unit: text("unit"),
            value: value["value"].as_f64().context("a value")?,
            baseline_name: text("baseline_name"),
            baseline_value: value["baseline_value"].as_f64().unwrap_or(0.0),
        })
    }

    /// Ours over the baseline; 0 when there is no baseline.
    pub(crate) fn ratio(&self) -> f64 {
        if self.baseline_value == 0.0 {
            0.0
        } else {
            self.value / self.baseline_value
        }
    }
}

/// The median and the range of one quantity over the rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// Of a non-empty set of values; the median of an even count is the mean of the middle two.
    pub(crate) fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }

    /// `median [min–max]`, with `decimals` after the point.
    pub(crate) fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Every round of one figure, in the order they ran.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    pub(crate) first: Sample,
    pub(crate) rounds: Vec<Sample>,
}

impl Figure {
    pub(crate) fn value(&self) -> Spread {
        Spread::of(&self.collect(|s| s.value))
    }

    pub(crate) fn baseline(&self) -> Spread {
        Spread::of(&self.collect(|s| s.baseline_value))
    }

    /// The median of the per-round ratios, not the ratio of the medians: each round's ratio
    /// compares two measurements taken minutes apart at most, on the same machine state.
    pub(crate) fn ratio(&self) -> Spread {
        Spread::of(&self.collect(Sample::ratio))
    }

    fn collect(&self, field: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.rounds.iter().map(field).collect()
    }

    /// The `results.json` entry: the aggregates, the single-run fields (`value`,
    /// `baseline_value`, `ratio`, now the medians) and every round.
    pub(crate) fn to_json(&self) -> Value {
        let (value, baseline, ratio) = (self.value(), self.baseline(), self.ratio());
        let rounds: Vec<Value> = self
            .rounds
            .iter()
            .map(|s| json!({ "value": s.value, "baseline_value": s.baseline_value, "ratio": s.ratio() }))
            .collect();
        json!({
            "name": self.first.name, "unit": self.first.unit,
            "median": value.median, "min": value.min, "max": value.max,
            "baseline_name": self.first.baseline_name,
            "baseline_median": baseline.median, "baseline_min": baseline.min, "baseline_max": baseline.max,
            "ratio_median": ratio.median, "ratio_min": ratio.min, "ratio_max": ratio.max,
            "value": value.median, "baseline_value": baseline.median, "ratio": ratio.median,
            "rounds": rounds,
        })
    }
}

/// Groups samples by figure name, in the order each name first appeared.
pub(crate) fn figures(samples: &[Sample]) -> Vec<Figure> {
    let mut figures: Vec<Figure> = Vec::new();
    for sample in samples {
        match figures.iter_mut().find(|f| f.first.name == sample.name) {
            Some(figure) => figure.rounds.push(sample.clone()),
            None => figures.push(Figure {
                first: sample.clone(),
                rounds: vec![sample.clone()],
            }),
        }
    }
    figures
}

/// Digits after the point that keep about four significant ones (41076 → 0, 0.365 → 3).
pub(crate) fn decimals(value: f64) -> usize {
    match value.abs() {
        v if v >= 1000.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        _ => 3,
    }
}

/// The table printed at the end of a run: one row per figure, `median [min–max]` columns.
pub(crate) fn print_table(figures: &[Figure]) {
    println!(
        "{:<28} {:>26} {:<8} {:<34} {:>26} {:>20} {:>6}",
        "name", "value", "unit", "baseline", "baseline", "ratio", "rounds"
    );
    for figure in figures {
        let (value, baseline, ratio) = (figure.value(), figure.baseline(), figure.ratio());
        println!(
            "{:<28} {:>26} {:<8} {:<34} {:>26} {:>20} {:>6}",
            figure.first.name,
            value.show(decimals(value.median)),
            figure.first.unit,
            figure.first.baseline_name,
            baseline.show(decimals(baseline.median)),
            ratio.show(2),
            figure.rounds.len(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_and_the_range() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Spread::of(&[4.0, 1.0, 3.0, 2.0]).median, 2.5);
        assert_eq!(Spread::of(&[7.0]).show(1), "7.0 [7.0–7.0]");
    }

    #[test]
    fn ratio_is_the_median_of_per_round_ratios() {
        let samples = [
            Sample::new("tasks.drain_per_s", "tasks/s", 10.0, "raw", 10.0),
            Sample::new("rpc.one_p50_ms", "ms", 1.0, "raw", 0.5),
            Sample::new("tasks.drain_per_s", "tasks/s", 30.0, "raw", 10.0),
            Sample::new("tasks.drain_per_s", "tasks/s", 20.0, "raw", 40.0),
        ];
        let figures = figures(&samples);
        assert_eq!(figures.len(), 2);
        let drain = &figures[0];
        assert_eq!(drain.rounds.len(), 3);
        assert_eq!(drain.value().median, 20.0);
        assert_eq!(drain.baseline().median, 10.0);
        // Ratios 1, 3 and 0.5: median 1, while the ratio of the medians would be 2.
        assert_eq!(
            drain.ratio(),
            Spread {
                median: 1.0,
                min: 0.5,
                max: 3.0
            }
        );
        let json = drain.to_json();
        assert_eq!(json["rounds"].as_array().map(Vec::len), Some(3));
        assert_eq!(json["ratio"], json["ratio_median"]);
        assert_eq!(json["value"].as_f64(), Some(20.0));
    }

    #[test]
    fn a_bench_line_without_baseline_parses() {
        let sample = Sample::parse(r#"{"name":"a.b","unit":"ms","value":1.5}"#)
            .expect("a line without baseline");
        assert_eq!(sample, Sample::new("a.b", "ms", 1.5, "", 0.0));
        assert_eq!(sample.ratio(), 0.0);
        assert!(Sample::parse(r#"{"unit":"ms"}"#).is_err());
    }
}
