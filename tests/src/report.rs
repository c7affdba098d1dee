//! Reading and checking observer's JSON report against the spec.
//!
//! The checks here hold for any recording, whatever the load: a histogram's buckets are exactly
//! the scale-2 exponential buckets, non-empty, ascending, and add up to its count; the sum lies
//! between what the bucket bounds allow; percentiles are ordered and sit in the bucket where
//! their rank falls; `max_ns` is the upper bound of the highest bucket. Breakdown lists are
//! sorted by count, bounded by `--top`, and (when not cut by `--top`) add up to the total.

use std::time::Duration;

use serde_json::Value;

use crate::hist;

/// observer's report, with the duration it was asked to record.
pub struct Report {
    pub json: Value,
}

impl Report {
    pub fn new(json: Value, duration: Duration) -> Self {
        let d = json["duration_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("report has no numeric duration_s: {json}"));
        // The time actually measured: the asked duration give or take timer slack.
        let asked = duration.as_secs_f64();
        assert!(
            (d - asked).abs() <= (0.05 * asked).max(0.25),
            "duration_s is {d}, asked for {duration:?}"
        );
        Self { json }
    }

    /// The signal under `signals.<key>`; fails showing `errors` when observer could not run it.
    pub fn signal(&self, key: &str) -> &Value {
        let v = &self.json["signals"][key];
        if v.is_null() {
            panic!(
                "report has no signals.{key}; errors: {}; whole report: {}",
                self.json["errors"], self.json
            );
        }
        if let Some(e) = self.json["errors"].get(key) {
            panic!("observer reported an error for {key}: {e}");
        }
        v
    }

    /// Keys present under `signals`.
    pub fn signal_keys(&self) -> Vec<String> {
        self.json["signals"]
            .as_object()
            .unwrap_or_else(|| panic!("report has no signals object: {}", self.json))
            .keys()
            .cloned()
            .collect()
    }

    /// Asserts that every signal was recorded and none failed (`errors` absent or empty).
    pub fn assert_all_signals(&self, ctx: &str) {
        let mut keys = self.signal_keys();
        keys.sort();
        let mut want = SIGNAL_KEYS.map(String::from).to_vec();
        want.sort();
        assert_eq!(
            keys, want,
            "{ctx}: signals recorded; errors: {}",
            self.json["errors"]
        );
        assert!(
            self.json
                .get("errors")
                .is_none_or(|e| e.as_object().is_some_and(|o| o.is_empty())),
            "{ctx}: signals failed: {}",
            self.json["errors"]
        );
    }
}

/// The signals' names on the command line, and their keys in the JSON report, in the same order.
pub const SIGNALS: [&str; 5] = ["runqueue", "blockio", "tcp", "lock", "futex"];
pub const SIGNAL_KEYS: [&str; 5] = [
    "runqueue_latency",
    "block_io_latency",
    "tcp_retransmits",
    "lock_contention",
    "futex_wait",
];

/// The SUMMARY fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub sum_ns: u64,
    pub p50_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
}

fn u64_field(v: &Value, k: &str, ctx: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{ctx}: field {k:?} is not an unsigned integer: {v}"))
}

fn f64_field(v: &Value, k: &str, ctx: &str) -> f64 {
    let x = v[k]
        .as_f64()
        .unwrap_or_else(|| panic!("{ctx}: field {k:?} is not a number: {v}"));
    assert!(x.is_finite() && x >= 0.0, "{ctx}: {k} = {x}");
    x
}

impl Summary {
    /// Reads a SUMMARY and checks what holds for any summary on its own: percentiles ordered
    /// and at most `max_ns`; every value is at most `max_ns`, so `sum_ns <= count * max_ns`;
    /// `max_ns` is a bucket upper bound; an empty summary is all zeros.
    pub fn parse(v: &Value, ctx: &str) -> Self {
        let s = Summary {
            count: u64_field(v, "count", ctx),
            sum_ns: u64_field(v, "sum_ns", ctx),
            p50_ns: f64_field(v, "p50_ns", ctx),
            p90_ns: f64_field(v, "p90_ns", ctx),
            p99_ns: f64_field(v, "p99_ns", ctx),
            p999_ns: f64_field(v, "p999_ns", ctx),
            max_ns: f64_field(v, "max_ns", ctx),
        };
        let eps = 1e-6;
        assert!(
            s.p50_ns <= s.p90_ns + eps
                && s.p90_ns <= s.p99_ns + eps
                && s.p99_ns <= s.p999_ns + eps
                && s.p999_ns <= s.max_ns + eps,
            "{ctx}: percentiles not ordered p50 <= p90 <= p99 <= p999 <= max: {s:?}"
        );
        if s.count == 0 {
            assert_eq!(
                (s.sum_ns, s.p50_ns, s.max_ns),
                (0, 0.0, 0.0),
                "{ctx}: empty summary must be all zeros: {s:?}"
            );
        } else {
            assert!(
                s.sum_ns as f64 <= s.count as f64 * s.max_ns * (1.0 + 1e-9),
                "{ctx}: sum_ns {} exceeds count {} * max_ns {}",
                s.sum_ns,
                s.count,
                s.max_ns
            );
            assert!(
                s.max_ns == 0.0 || hist::index_of_upper(s.max_ns).is_some(),
                "{ctx}: max_ns {} is not the upper bound of a scale-2 bucket",
                s.max_ns
            );
        }
        s
    }

    pub fn percentiles(&self) -> [(f64, f64); 4] {
        [
            (0.5, self.p50_ns),
            (0.9, self.p90_ns),
            (0.99, self.p99_ns),
            (0.999, self.p999_ns),
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub lower_ns: f64,
    pub upper_ns: f64,
    pub count: u64,
}

/// Reads a SUMMARY with its `buckets` and checks the histogram against the spec (see the module
/// docs). Returns both.
pub fn histogram(v: &Value, ctx: &str) -> (Summary, Vec<Bucket>) {
    let s = Summary::parse(v, ctx);
    let buckets: Vec<Bucket> = v["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: no buckets array: {v}"))
        .iter()
        .map(|b| Bucket {
            lower_ns: f64_field(b, "lower_ns", ctx),
            upper_ns: f64_field(b, "upper_ns", ctx),
            count: u64_field(b, "count", ctx),
        })
        .collect();
    let mut prev_upper = -1.0;
    for b in &buckets {
        assert!(b.count > 0, "{ctx}: empty bucket listed: {b:?}");
        assert!(
            b.upper_ns > prev_upper && b.lower_ns >= prev_upper,
            "{ctx}: buckets not ascending and disjoint: {buckets:?}"
        );
        if b.upper_ns == 0.0 {
            assert_eq!(b.lower_ns, 0.0, "{ctx}: zero bucket must be [0, 0]: {b:?}");
        } else {
            let i = hist::index_of_upper(b.upper_ns)
                .unwrap_or_else(|| panic!("{ctx}: {b:?} upper bound is not 2^((i+1)/4) for any i"));
            let (lo, hi) = hist::bounds(i);
            assert!(
                hist::close(b.lower_ns, lo) && hist::close(b.upper_ns, hi),
                "{ctx}: {b:?} is not the scale-2 bucket {i} = ({lo}, {hi}]"
            );
        }
        prev_upper = b.upper_ns;
    }
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    assert_eq!(
        total, s.count,
        "{ctx}: bucket counts add up to {total}, count is {}",
        s.count
    );
    let max = buckets.last().map_or(0.0, |b| b.upper_ns);
    assert!(
        hist::close(s.max_ns, max),
        "{ctx}: max_ns {} but highest bucket ends at {max}",
        s.max_ns
    );
    // Every value v of a bucket has lower < v <= upper, so the exact sum is bounded by these.
    let lo_sum: f64 = buckets.iter().map(|b| b.lower_ns * b.count as f64).sum();
    let hi_sum: f64 = buckets.iter().map(|b| b.upper_ns * b.count as f64).sum();
    assert!(
        s.sum_ns as f64 >= lo_sum * (1.0 - 1e-9) && s.sum_ns as f64 <= hi_sum * (1.0 + 1e-9),
        "{ctx}: sum_ns {} outside what the buckets allow [{lo_sum}, {hi_sum}]",
        s.sum_ns
    );
    // A percentile interpolates inside the bucket where its rank q*count falls. Whether a rank
    // exactly at a bucket's cumulative end belongs to it or to the next one is a convention, so
    // allow from the first bucket whose cumulative count reaches the rank to the first that
    // exceeds it.
    for (q, p) in s.percentiles() {
        if buckets.is_empty() {
            continue;
        }
        let rank = q * s.count as f64;
        let mut cum = 0.0;
        let mut first = None;
        let mut last = None;
        for (k, b) in buckets.iter().enumerate() {
            cum += b.count as f64;
            if first.is_none() && cum >= rank {
                first = Some(k);
            }
            if cum > rank {
                last = Some(k);
                break;
            }
        }
        let first = first.unwrap_or(buckets.len() - 1);
        let last = last.unwrap_or(buckets.len() - 1);
        let (lo, hi) = (buckets[first].lower_ns, buckets[last].upper_ns);
        assert!(
            p >= lo * (1.0 - 1e-9) && p <= hi * (1.0 + 1e-9),
            "{ctx}: p{} = {p} outside the bucket(s) where its rank {rank} falls: [{lo}, {hi}]; buckets {buckets:?}",
            q * 100.0
        );
    }
    (s, buckets)
}

/// Reads a breakdown list: each entry's SUMMARY (under `summary_key`, or inline when `None`) is
/// checked; the list is sorted by count descending, has at most `top` entries, and its counts
/// do not add up to more than `total`. See also [`assert_adds_up`].
pub fn breakdown<'a>(
    list: &'a Value,
    summary_key: Option<&str>,
    top: usize,
    total: u64,
    ctx: &str,
) -> Vec<(&'a Value, Summary)> {
    let arr = list
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: not a list: {list}"));
    assert!(
        arr.len() <= top,
        "{ctx}: {} entries, more than --top {top}",
        arr.len()
    );
    let entries: Vec<(&Value, Summary)> = arr
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let v = summary_key.map_or(e, |key| &e[key]);
            (e, Summary::parse(v, &format!("{ctx}[{k}]")))
        })
        .collect();
    for w in entries.windows(2) {
        assert!(
            w[0].1.count >= w[1].1.count,
            "{ctx}: not sorted by count descending: {} before {}",
            w[0].0,
            w[1].0
        );
    }
    let sum: u64 = entries.iter().map(|(_, s)| s.count).sum();
    assert!(
        sum <= total,
        "{ctx}: entries add up to {sum}, more than the total {total}"
    );
    entries
}

/// A breakdown that `--top` did not cut (fewer than `top` entries) accounts for every event: its
/// counts plus the events it `dropped` (not attributed because its map was full) are the total.
pub fn adds_up(
    entries: &[(&Value, Summary)],
    top: usize,
    total: u64,
    dropped: u64,
    ctx: &str,
) -> Result<(), String> {
    let sum: u64 = entries.iter().map(|(_, s)| s.count).sum();
    if entries.len() < top && sum + dropped != total {
        return Err(format!(
            "{ctx}: list not cut by --top {top}, yet its {} entries add up to {sum} (+{dropped} dropped), total is {total}",
            entries.len()
        ));
    }
    Ok(())
}

/// [`adds_up`], failing the test.
pub fn assert_adds_up(
    entries: &[(&Value, Summary)],
    top: usize,
    total: u64,
    dropped: u64,
    ctx: &str,
) {
    if let Err(e) = adds_up(entries, top, total, dropped, ctx) {
        panic!("{e}");
    }
}

/// Convenience for `dropped.<key>` counters.
pub fn dropped(signal: &Value, key: &str, ctx: &str) -> u64 {
    u64_field(&signal["dropped"], key, &format!("{ctx}.dropped"))
}

/// A value's field as u64, failing the test with context.
pub fn u64_of(v: &Value, k: &str, ctx: &str) -> u64 {
    u64_field(v, k, ctx)
}

/// A value's field as str, failing the test with context.
pub fn str_of<'a>(v: &'a Value, k: &str, ctx: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{ctx}: field {k:?} is not a string: {v}"))
}
