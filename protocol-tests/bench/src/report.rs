//! Figures collected over the runs, their medians, and the Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One figure measured for one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Creations per second.
    Creations,
    /// HEADs per second.
    Heads,
    /// One large upload in one PATCH, MiB/s.
    Large,
    /// Parallel uploads, aggregate MiB/s.
    Parallel,
    /// One upload in small chunks (chunked transfer encoding), MiB/s.
    Chunked,
    /// Small uploads per second.
    Small,
    /// Slow uploads that completed.
    SlowCompleted,
    /// Peak RSS over the fast scenarios, MiB.
    RssFast,
    /// Peak RSS during the slow uploads, MiB.
    RssSlow,
    /// Server CPU seconds per GiB over the two large-upload scenarios.
    ServerCpu,
    /// Client (loadgen) CPU seconds per GiB over the same scenarios.
    ClientCpu,
    /// Server CPU microseconds per creation (user + system). Less noisy than the rate: a busy
    /// host slows a server down but hardly changes what one request costs it.
    CpuPerCreation,
    /// Server CPU microseconds per HEAD.
    CpuPerHead,
    /// Server CPU microseconds per small upload.
    CpuPerSmall,
    /// Server CPU seconds per GiB of the chunked upload.
    CpuChunked,
}

impl Metric {
    fn format(self, value: f64) -> String {
        match self {
            Metric::Creations
            | Metric::Heads
            | Metric::Small
            | Metric::Large
            | Metric::Parallel
            | Metric::Chunked => thousands(value.round() as u64),
            Metric::SlowCompleted => thousands(value.round() as u64),
            Metric::RssFast | Metric::RssSlow => format!("{value:.1}"),
            Metric::ServerCpu | Metric::ClientCpu | Metric::CpuChunked => format!("{value:.2}"),
            Metric::CpuPerCreation | Metric::CpuPerHead | Metric::CpuPerSmall => {
                format!("{value:.0}")
            }
        }
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Median of a non-empty list (mean of the middle two for even lengths).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// Every figure of every run, and what went wrong.
#[derive(Debug, Default)]
pub struct Results {
    values: BTreeMap<(String, Metric), Vec<f64>>,
    flagged: std::collections::BTreeSet<(String, Metric)>,
    /// Request failures and other problems, one line each, in the order they happened.
    pub problems: Vec<String>,
}

impl Results {
    /// Record one run's `value` of `metric` for the server `label`.
    pub fn record(&mut self, label: &str, metric: Metric, value: f64) {
        self.values
            .entry((label.to_owned(), metric))
            .or_default()
            .push(value);
    }

    /// Mark a figure as incomplete (requests failed in some run); shown with a dagger.
    pub fn flag(&mut self, label: &str, metric: Metric) {
        self.flagged.insert((label.to_owned(), metric));
    }

    /// Whether any figure is marked incomplete.
    pub fn any_flagged(&self) -> bool {
        !self.flagged.is_empty()
    }

    /// Median over the runs.
    pub fn median(&self, label: &str, metric: Metric) -> Option<f64> {
        self.values
            .get(&(label.to_owned(), metric))
            .and_then(|v| median(v))
    }

    /// Lowest and highest over the runs.
    pub fn range(&self, label: &str, metric: Metric) -> Option<(f64, f64)> {
        let values = self.values.get(&(label.to_owned(), metric))?;
        let lo = values.iter().copied().reduce(f64::min)?;
        let hi = values.iter().copied().reduce(f64::max)?;
        Some((lo, hi))
    }

    fn cell(&self, label: &str, metric: Metric) -> String {
        let dagger = if self.flagged.contains(&(label.to_owned(), metric)) {
            " †"
        } else {
            ""
        };
        self.median(label, metric).map_or_else(
            || "—".to_owned(),
            |v| format!("{}{dagger}", metric.format(v)),
        )
    }

    /// `tusk / sink` for `metric`.
    pub fn ratio(&self, tusk: &str, sink: &str, metric: Metric) -> Option<f64> {
        let t = self.median(tusk, metric)?;
        let s = self.median(sink, metric)?;
        (s > 0.0).then(|| t / s)
    }

    fn ratio_cell(&self, tusk: &str, sink: &str, metric: Metric) -> String {
        self.ratio(tusk, sink, metric)
            .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"))
    }
}

/// Column labels.
pub const SINK_FSYNC: &str = "sink-fsync";
/// Column labels.
pub const TUSK_FSYNC: &str = "tusk-fsync";
/// Column labels.
pub const SINK_NOFSYNC: &str = "sink-nofsync";
/// Column labels.
pub const TUSK_RELAXED: &str = "tusk-relaxed";
/// The client's ceiling: the sink that stores nothing.
pub const SINK_DISCARD: &str = "sink-discard";
/// tusk relaxed with a fixed 32 KiB buffer (only when the config key exists).
pub const TUSK_RELAXED_FIXED: &str = "tusk-relaxed-32KiB";

/// The titles of the rows, which depend on the sizes used.
#[derive(Debug, Clone)]
pub struct Titles {
    /// Per metric, the row title.
    pub rows: Vec<(Metric, String)>,
    /// Slow uploads started per run (the denominator of [`Metric::SlowCompleted`]).
    pub slow_total: usize,
}

/// The main table: sink-fsync, tusk-fsync, ratio, sink-nofsync, tusk-relaxed, ratio.
pub fn main_table(results: &Results, titles: &Titles) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | sink-fsync | tusk-fsync | ratio | sink-nofsync | tusk-relaxed | ratio |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for (metric, title) in &titles.rows {
        let cell = |label: &str| match (*metric, results.median(label, *metric)) {
            (Metric::SlowCompleted, Some(done)) => {
                let dagger = results.cell(label, *metric).ends_with('†');
                format!(
                    "{}/{}{}",
                    done.round(),
                    titles.slow_total,
                    if dagger { " †" } else { "" }
                )
            }
            _ => results.cell(label, *metric),
        };
        let _ = writeln!(
            out,
            "| {title} | {} | {} | {} | {} | {} | {} |",
            cell(SINK_FSYNC),
            cell(TUSK_FSYNC),
            results.ratio_cell(TUSK_FSYNC, SINK_FSYNC, *metric),
            cell(SINK_NOFSYNC),
            cell(TUSK_RELAXED),
            results.ratio_cell(TUSK_RELAXED, SINK_NOFSYNC, *metric),
        );
    }
    out
}

/// Lowest–highest over the runs for every server, to judge the medians' noise.
pub fn spread_table(results: &Results, titles: &Titles, labels: &[&str]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario (min–max over runs) | {} |",
        labels.join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "---:|".repeat(labels.len()));
    for (metric, title) in &titles.rows {
        let cells: Vec<String> = labels
            .iter()
            .map(|label| {
                results.range(label, *metric).map_or_else(
                    || "—".to_owned(),
                    |(lo, hi)| format!("{}–{}", metric.format(lo), metric.format(hi)),
                )
            })
            .collect();
        let _ = writeln!(out, "| {title} | {} |", cells.join(" | "));
    }
    out
}

/// The client's ceiling: every throughput scenario against the sink that stores nothing.
pub fn ceiling_table(results: &Results, titles: &Titles) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | client ceiling (sink-discard) | fastest sink | fastest sink / ceiling |\n",
    );
    out.push_str("|---|---:|---:|---:|\n");
    for (metric, title) in &titles.rows {
        if !matches!(
            metric,
            Metric::Creations
                | Metric::Heads
                | Metric::Large
                | Metric::Parallel
                | Metric::Chunked
                | Metric::Small
        ) {
            continue;
        }
        let ceiling = results.median(SINK_DISCARD, *metric);
        let best = [SINK_FSYNC, SINK_NOFSYNC]
            .iter()
            .filter_map(|l| results.median(l, *metric))
            .reduce(f64::max);
        let share = match (ceiling, best) {
            (Some(c), Some(b)) if c > 0.0 => format!("{:.2}", b / c),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {title} | {} | {} | {share} |",
            results.cell(SINK_DISCARD, *metric),
            best.map_or_else(|| "—".to_owned(), |b| metric.format(b)),
        );
    }
    out
}

/// Adaptive buffer (the default) against a fixed 32 KiB one, both relaxed.
pub fn buffer_table(results: &Results, titles: &Titles) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | tusk-relaxed (adaptive) | tusk-relaxed (32 KiB fixed) | fixed / adaptive |\n",
    );
    out.push_str("|---|---:|---:|---:|\n");
    for (metric, title) in &titles.rows {
        let _ = writeln!(
            out,
            "| {title} | {} | {} | {} |",
            results.cell(TUSK_RELAXED, *metric),
            results.cell(TUSK_RELAXED_FIXED, *metric),
            results.ratio_cell(TUSK_RELAXED_FIXED, TUSK_RELAXED, *metric),
        );
    }
    out
}

/// One target from the issue and how the medians fare against it.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What is required.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// `Some(true)` PASS, `Some(false)` FAIL, `None` not measured.
    pub pass: Option<bool>,
}

fn ratio_target(
    results: &Results,
    target: String,
    tusk: &str,
    sink: &str,
    metric: Metric,
    minimum: f64,
) -> Verdict {
    match results.ratio(tusk, sink, metric) {
        Some(r) => Verdict {
            target,
            measured: format!(
                "{r:.2}× ({} vs {})",
                results.cell(tusk, metric),
                results.cell(sink, metric)
            ),
            pass: Some(r >= minimum),
        },
        None => Verdict {
            target,
            measured: "not measured".to_owned(),
            pass: None,
        },
    }
}

/// The targets, judged on the medians.
pub fn verdicts(results: &Results, titles: &Titles, large: &str, parallel: &str) -> Vec<Verdict> {
    let mut out = vec![
        ratio_target(
            results,
            format!("fsync large upload ({large}) ≥ 0.9× sink-fsync"),
            TUSK_FSYNC,
            SINK_FSYNC,
            Metric::Large,
            0.9,
        ),
        ratio_target(
            results,
            format!("fsync large uploads ({parallel}) ≥ 0.9× sink-fsync"),
            TUSK_FSYNC,
            SINK_FSYNC,
            Metric::Parallel,
            0.9,
        ),
        ratio_target(
            results,
            "fsync small uploads ≥ 0.8× sink-fsync".to_owned(),
            TUSK_FSYNC,
            SINK_FSYNC,
            Metric::Small,
            0.8,
        ),
        ratio_target(
            results,
            format!("relaxed large upload ({large}) ≥ 0.9× sink-nofsync"),
            TUSK_RELAXED,
            SINK_NOFSYNC,
            Metric::Large,
            0.9,
        ),
        ratio_target(
            results,
            format!("relaxed large uploads ({parallel}) ≥ 0.9× sink-nofsync"),
            TUSK_RELAXED,
            SINK_NOFSYNC,
            Metric::Parallel,
            0.9,
        ),
        ratio_target(
            results,
            "relaxed creations/s ≥ 0.5× sink-nofsync".to_owned(),
            TUSK_RELAXED,
            SINK_NOFSYNC,
            Metric::Creations,
            0.5,
        ),
        ratio_target(
            results,
            "HEAD/s ≥ 0.5× sink (tusk-fsync vs sink-fsync)".to_owned(),
            TUSK_FSYNC,
            SINK_FSYNC,
            Metric::Heads,
            0.5,
        ),
        ratio_target(
            results,
            "HEAD/s ≥ 0.5× sink (tusk-relaxed vs sink-nofsync)".to_owned(),
            TUSK_RELAXED,
            SINK_NOFSYNC,
            Metric::Heads,
            0.5,
        ),
    ];
    for label in [TUSK_FSYNC, TUSK_RELAXED] {
        let target = format!(
            "{label}: peak RSS < 150 MiB with {} slow uploads, all complete",
            thousands(titles.slow_total as u64)
        );
        let rss = results.median(label, Metric::RssSlow);
        let done = results
            .range(label, Metric::SlowCompleted)
            .map(|(lo, _)| lo);
        out.push(match (rss, done) {
            (Some(rss), Some(done)) => Verdict {
                target,
                measured: format!(
                    "{rss:.1} MiB, {}/{} completed (worst run)",
                    done.round(),
                    titles.slow_total
                ),
                pass: Some(rss < 150.0 && done.round() as usize == titles.slow_total),
            },
            _ => Verdict {
                target,
                measured: "not measured".to_owned(),
                pass: None,
            },
        });
    }
    out
}

/// The verdicts as a Markdown table.
pub fn verdict_table(verdicts: &[Verdict]) -> String {
    let mut out = String::from("| target | measured (medians) | result |\n|---|---|---|\n");
    for v in verdicts {
        let result = match v.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        let _ = writeln!(out, "| {} | {} | {result} |", v.target, v.measured);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn ratios_use_medians() {
        let mut results = Results::default();
        for v in [100.0, 110.0, 90.0] {
            results.record(SINK_FSYNC, Metric::Large, v);
        }
        for v in [95.0, 80.0, 99.0] {
            results.record(TUSK_FSYNC, Metric::Large, v);
        }
        let r = results
            .ratio(TUSK_FSYNC, SINK_FSYNC, Metric::Large)
            .unwrap();
        assert!((r - 0.95).abs() < 1e-9);
    }
}
