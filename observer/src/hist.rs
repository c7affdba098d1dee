//! Turning the kernel's cumulative histograms into what people read: deltas between two reads,
//! bucket bounds, and interpolated percentiles.

use std::collections::HashMap;
use std::hash::Hash;

use observer_common::{
    Hist,
    hist::{BUCKETS_PER_OCTAVE, slot_index},
};
use serde::Serialize;

/// Growth of a kernel counter between two reads.
///
/// Counters only grow, but a read can see a smaller value in two cases: the `u64` wrapped (the
/// difference is then small modulo 2^64), or the counter started over (a map entry was deleted
/// and re-created): then everything it holds is new. A wrapped difference below 2^63 is taken
/// as a wrap, anything else as a restart.
pub const fn counter_delta(current: u64, previous: u64) -> u64 {
    let wrapped = current.wrapping_sub(previous);
    if wrapped <= u64::MAX / 2 {
        wrapped
    } else {
        current
    }
}

/// Element-wise [`counter_delta`] of two histograms.
pub fn hist_delta(current: &Hist, previous: &Hist) -> Hist {
    let mut out = Hist::ZERO;
    out.zero = counter_delta(current.zero, previous.zero);
    // The sum is a counter too, but it may legitimately grow by more than 2^63 ns (292 years)
    // only in theory; treat it like the others.
    out.sum = counter_delta(current.sum, previous.sum);
    for ((o, c), p) in out
        .buckets
        .iter_mut()
        .zip(&current.buckets)
        .zip(&previous.buckets)
    {
        *o = counter_delta(*c, *p);
    }
    out
}

/// Adds `other` into `into`.
pub fn hist_add(into: &mut Hist, other: &Hist) {
    into.zero = into.zero.wrapping_add(other.zero);
    into.sum = into.sum.wrapping_add(other.sum);
    for (a, b) in into.buckets.iter_mut().zip(&other.buckets) {
        *a = a.wrapping_add(*b);
    }
}

/// Delta of a per-CPU histogram: per-CPU deltas, summed. A CPU present in only one read (it
/// went away, or came online) contributes only what it holds that is new: nothing if it is
/// gone, everything if it is new.
pub fn percpu_hist_delta(current: &[Hist], previous: &[Hist]) -> Hist {
    let mut out = Hist::ZERO;
    for (cpu, cur) in current.iter().enumerate() {
        let d = match previous.get(cpu) {
            Some(prev) => hist_delta(cur, prev),
            None => *cur,
        };
        hist_add(&mut out, &d);
    }
    out
}

/// Delta of a per-CPU counter, with the same rules as [`percpu_hist_delta`].
pub fn percpu_counter_delta(current: &[u64], previous: &[u64]) -> u64 {
    current
        .iter()
        .enumerate()
        .map(|(cpu, &c)| counter_delta(c, previous.get(cpu).copied().unwrap_or(0)))
        .fold(0u64, u64::wrapping_add)
}

/// Delta of keyed values: keys new since `previous` count from zero; keys whose delta is empty
/// are dropped.
pub fn keyed_delta<K: Eq + Hash + Clone, V>(
    current: &HashMap<K, V>,
    previous: &HashMap<K, V>,
    delta: impl Fn(&V, Option<&V>) -> V,
    is_empty: impl Fn(&V) -> bool,
) -> HashMap<K, V> {
    current
        .iter()
        .map(|(k, v)| (k.clone(), delta(v, previous.get(k))))
        .filter(|(_, v)| !is_empty(v))
        .collect()
}

/// Number of values in a histogram.
pub fn count(h: &Hist) -> u64 {
    h.buckets.iter().fold(h.zero, |a, b| a.wrapping_add(*b))
}

/// Bounds `(lower, upper]` in ns of bucket slot `slot`: `(2^(i/4), 2^((i+1)/4)]` for OTLP index i.
pub fn bucket_bounds(slot: usize) -> (f64, f64) {
    let i = f64::from(slot_index(slot));
    let per = BUCKETS_PER_OCTAVE as f64;
    ((i / per).exp2(), ((i + 1.0) / per).exp2())
}

/// One non-empty bucket, as printed and exported. Zero-valued events are the bucket (0, 0].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub lower_ns: f64,
    pub upper_ns: f64,
    pub count: u64,
}

/// Non-empty buckets in ascending order, the zero bucket first.
pub fn buckets(h: &Hist) -> Vec<Bucket> {
    let zero = (h.zero > 0).then_some(Bucket {
        lower_ns: 0.0,
        upper_ns: 0.0,
        count: h.zero,
    });
    zero.into_iter()
        .chain(
            h.buckets
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(s, &count)| {
                    let (lower_ns, upper_ns) = bucket_bounds(s);
                    Bucket {
                        lower_ns,
                        upper_ns,
                        count,
                    }
                }),
        )
        .collect()
}

/// The value below which a fraction `q` of the values lie, interpolated linearly inside the
/// bucket that holds that rank (the histogram only knows which bucket a value fell in). 0 for
/// an empty histogram.
pub fn percentile(h: &Hist, q: f64) -> f64 {
    let total = count(h);
    if total == 0 {
        return 0.0;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = h.zero as f64;
    if rank <= below {
        return 0.0;
    }
    let mut last = 0.0;
    for (s, &c) in h.buckets.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let (lower, upper) = bucket_bounds(s);
        let c = c as f64;
        if rank <= below + c {
            return lower + (upper - lower) * (rank - below) / c;
        }
        below += c;
        last = upper;
    }
    last
}

/// Upper bound of the highest non-empty bucket: the largest value can be no more than this.
pub fn max_bound(h: &Hist) -> f64 {
    h.buckets
        .iter()
        .rposition(|c| *c > 0)
        .map_or(0.0, |s| bucket_bounds(s).1)
}

/// The figures every latency report carries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub sum_ns: u64,
    pub p50_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub max_ns: f64,
}

impl Summary {
    pub fn of(h: &Hist) -> Self {
        Self {
            count: count(h),
            sum_ns: h.sum,
            p50_ns: percentile(h, 0.50),
            p90_ns: percentile(h, 0.90),
            p99_ns: percentile(h, 0.99),
            p999_ns: percentile(h, 0.999),
            max_ns: max_bound(h),
        }
    }
}

/// A latency histogram as reported: its summary and its non-empty buckets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    #[serde(flatten)]
    pub summary: Summary,
    pub buckets: Vec<Bucket>,
}

impl Latency {
    pub fn of(h: &Hist) -> Self {
        Self {
            summary: Summary::of(h),
            buckets: buckets(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use observer_common::hist::{BOUNDARIES, BUCKETS, slot};

    use super::*;

    /// Every bucket's upper boundary as an integer: exact for powers of two, the floor for
    /// the irrational ones, with the slot the boundary closes.
    fn boundary_floors() -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for e in 0..64u32 {
            // 2^e closes bucket slot 4e (index 4e-1).
            out.push((4 * e as usize, 1u64 << e));
            for (j, b) in BOUNDARIES.iter().enumerate() {
                // floor(2^(e + (j+1)/4)) = BOUNDARIES[j] >> (63 - e), exact for e <= 63.
                out.push((4 * e as usize + j + 1, b >> (63 - e)));
            }
        }
        out
    }

    #[test]
    fn slot_of_one_and_extremes() {
        assert_eq!(slot(1), 0); // (2^-0.25, 1]
        assert_eq!(slot(2), 4); // (2^0.75, 2]
        assert_eq!(slot(3), 7); // (2^1.5, 2^1.75] = (2.83, 3.36]
        assert_eq!(slot(u64::MAX), BUCKETS - 1);
        assert_eq!(slot(1 << 63), 4 * 63);
        assert_eq!(slot((1 << 63) + 1), 4 * 63 + 1);
    }

    #[test]
    fn every_boundary_at_below_and_above() {
        for (s, at) in boundary_floors() {
            let (lower, upper) = bucket_bounds(s);
            // At the boundary (or the last integer below an irrational one): never above it,
            // and in this very bucket whenever the bucket holds that integer.
            assert!(slot(at) <= s, "value {at} above slot {s}");
            assert!(at as f64 <= upper * (1.0 + 1e-12));
            if at as f64 > lower * (1.0 + 1e-12) {
                assert_eq!(slot(at), s, "value {at} at the upper edge of slot {s}");
            }
            // Just below stays at or below; just above goes above.
            if at > 1 {
                assert!(
                    slot(at - 1) <= s,
                    "value {} below the edge of slot {s}",
                    at - 1
                );
            }
            if let Some(next) = at.checked_add(1) {
                assert!(
                    slot(next) > s,
                    "value {next} just above the edge of slot {s}"
                );
            }
        }
        // An exact power of two closes its bucket (upper-inclusive), with the integer below it;
        // the integer above opens the next bucket (from 8 on, buckets are wider than 1).
        for e in 3..63 {
            let p = 1u64 << e;
            assert_eq!(
                (slot(p - 1), slot(p), slot(p + 1)),
                (4 * e, 4 * e, 4 * e + 1)
            );
        }
    }

    #[test]
    fn boundaries_match_the_exponential_formula() {
        // Independent check of the constants: floor(2^(63 + j/4)) from f64 agrees to 1e-15.
        for (j, b) in BOUNDARIES.iter().enumerate() {
            let expected = (63.0 + (j as f64 + 1.0) / 4.0).exp2();
            assert!(((*b as f64) - expected).abs() / expected < 1e-15);
        }
        // And slot() agrees with ceil(4*log2(v)) - 1 + 1 for values far from boundaries.
        for v in [
            5u64,
            7,
            10,
            100,
            1000,
            12345,
            1 << 40 | 12345,
            987_654_321_012,
        ] {
            let idx = ((v as f64).log2() * 4.0).ceil() as usize; // slot = index + 1
            assert_eq!(slot(v), idx, "value {v}");
        }
    }

    #[test]
    fn percentiles_interpolate_inside_the_bucket() {
        let mut h = Hist::ZERO;
        // 100 values all in the bucket (2^2.5, 2^2.75] = (5.66, 6.73]: the 50th is halfway.
        h.buckets[slot(6)] = 100;
        h.sum = 600;
        let (lo, hi) = bucket_bounds(slot(6));
        assert!((percentile(&h, 0.5) - (lo + (hi - lo) * 0.5)).abs() < 1e-9);
        assert!((percentile(&h, 1.0) - hi).abs() < 1e-9);
        assert_eq!(max_bound(&h), hi);
        // Zeros come first.
        h.zero = 100;
        assert_eq!(percentile(&h, 0.5), 0.0);
        assert!(percentile(&h, 0.75) > lo);
        let s = Summary::of(&h);
        assert_eq!(s.count, 200);
        assert!(s.p50_ns <= s.p90_ns && s.p90_ns <= s.p99_ns && s.p99_ns <= s.p999_ns);
        assert!(s.p999_ns <= s.max_ns);
        assert_eq!(Summary::of(&Hist::ZERO).p99_ns, 0.0);
    }

    #[test]
    fn counter_deltas_growth_wrap_and_restart() {
        assert_eq!(counter_delta(10, 3), 7);
        assert_eq!(counter_delta(3, 3), 0);
        // Wrapped past u64::MAX: 5 more than MAX-1 is 3 (mod 2^64).
        assert_eq!(counter_delta(3, u64::MAX - 1), 5);
        // Restarted (entry re-created): all of it is new.
        assert_eq!(counter_delta(4, 1_000_000), 4);
    }

    #[test]
    fn percpu_delta_survives_a_cpu_going_away_and_coming_back() {
        let mut a = Hist::ZERO;
        a.buckets[10] = 5;
        a.sum = 50;
        let mut b = a;
        b.buckets[10] = 8;
        b.sum = 80;
        // Two CPUs, then CPU 1 disappears from the read: only CPU 0's growth counts.
        assert_eq!(percpu_hist_delta(&[b], &[a, a]).buckets[10], 3);
        // A CPU that appears counts in full.
        assert_eq!(percpu_hist_delta(&[b, a], &[a]).buckets[10], 3 + 5);
        assert_eq!(percpu_counter_delta(&[10, 7], &[4]), 6 + 7);
        assert_eq!(percpu_counter_delta(&[10], &[4, 100]), 6);
    }

    #[test]
    fn keyed_delta_drops_unchanged_and_counts_new_keys() {
        let prev = HashMap::from([(1u32, 5u64), (2, 7)]);
        let cur = HashMap::from([(1u32, 5u64), (2, 9), (3, 4)]);
        let d = keyed_delta(
            &cur,
            &prev,
            |c, p| counter_delta(*c, p.copied().unwrap_or(0)),
            |v| *v == 0,
        );
        assert_eq!(d, HashMap::from([(2, 2), (3, 4)]));
    }
}
