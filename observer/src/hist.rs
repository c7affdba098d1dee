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

/// A histogram as user space keeps it between reads: only its non-empty buckets.
///
/// The kernel's [`Hist`] is dense (257 buckets, 2 KB), and its per-process maps hold up to 4096
/// of them; most processes fill only a handful of buckets. The agent keeps a previous read and
/// the deltas of every interval, so dense copies of full maps cost tens of MB; sparse ones a few
/// hundred KB. Same counts as the dense form, bucket for bucket (a bucket at zero is absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseHist {
    pub zero: u64,
    pub sum: u64,
    /// `(slot, count)` of the non-zero buckets, in ascending slot order; boxed rather than a
    /// `Vec` so no spare capacity is kept per histogram.
    buckets: Box<[(u16, u64)]>,
}

impl SparseHist {
    pub fn of(h: &Hist) -> Self {
        Self {
            zero: h.zero,
            sum: h.sum,
            buckets: h
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(s, &c)| (s as u16, c))
                .collect(),
        }
    }

    /// The dense form.
    pub fn to_dense(&self) -> Hist {
        let mut h = Hist::ZERO;
        self.add_to(&mut h);
        h
    }

    /// Adds this histogram into a dense one.
    pub fn add_to(&self, into: &mut Hist) {
        into.zero = into.zero.wrapping_add(self.zero);
        into.sum = into.sum.wrapping_add(self.sum);
        for &(s, c) in &self.buckets {
            let b = &mut into.buckets[usize::from(s)];
            *b = b.wrapping_add(c);
        }
    }

    /// [`hist_delta`] of two sparse reads (`None`: the key is new, all of it counts). A bucket
    /// only in `previous` is 0 now: [`counter_delta`] decides, as for a dense one (a restart
    /// adds nothing; a wrap to exactly 0 adds what it took to get there).
    pub fn delta(current: &Self, previous: Option<&Self>) -> Self {
        let Some(previous) = previous else {
            return current.clone();
        };
        let (c, p) = (&current.buckets, &previous.buckets);
        let mut buckets = Vec::new();
        let (mut i, mut j) = (0, 0);
        loop {
            let (s, cur, prev) = match (c.get(i), p.get(j)) {
                (Some(&(sc, vc)), Some(&(sp, vp))) if sc == sp => {
                    (i, j) = (i + 1, j + 1);
                    (sc, vc, vp)
                }
                (Some(&(sc, vc)), Some(&(sp, _))) if sc < sp => {
                    i += 1;
                    (sc, vc, 0)
                }
                (Some(&(sc, vc)), None) => {
                    i += 1;
                    (sc, vc, 0)
                }
                (_, Some(&(sp, vp))) => {
                    j += 1;
                    (sp, 0, vp)
                }
                (None, None) => break,
            };
            let d = counter_delta(cur, prev);
            if d > 0 {
                buckets.push((s, d));
            }
        }
        Self {
            zero: counter_delta(current.zero, previous.zero),
            sum: counter_delta(current.sum, previous.sum),
            buckets: buckets.into_boxed_slice(),
        }
    }

    /// Adds `other` into this one, bucket for bucket.
    pub fn add(&mut self, other: &Self) {
        self.zero = self.zero.wrapping_add(other.zero);
        self.sum = self.sum.wrapping_add(other.sum);
        if other.buckets.is_empty() {
            return;
        }
        let (a, b) = (&self.buckets, &other.buckets);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        loop {
            let next = match (a.get(i), b.get(j)) {
                (Some(&(sa, ca)), Some(&(sb, cb))) if sa == sb => {
                    (i, j) = (i + 1, j + 1);
                    (sa, ca.wrapping_add(cb))
                }
                (Some(&x), Some(&(sb, _))) if x.0 < sb => {
                    i += 1;
                    x
                }
                (Some(&x), None) => {
                    i += 1;
                    x
                }
                (_, Some(&y)) => {
                    j += 1;
                    y
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.buckets = merged.into_boxed_slice();
    }

    /// Number of values, as [`count`] counts them.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(self.zero, |a, (_, c)| a.wrapping_add(*c))
    }
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

    /// Histograms with buckets in common, buckets of their own, a restart and a wrap.
    fn sparse_cases() -> Vec<(Hist, Hist)> {
        let mut prev = Hist::ZERO;
        let mut cur = Hist::ZERO;
        prev.zero = 3;
        prev.sum = 1_000;
        cur.zero = 5;
        cur.sum = 4_000;
        prev.buckets[0] = 7; // only before: gone (restarted), adds nothing
        prev.buckets[10] = 4;
        cur.buckets[10] = 9; // grew
        prev.buckets[20] = 6;
        cur.buckets[20] = 6; // unchanged
        cur.buckets[30] = 2; // new
        prev.buckets[40] = 100;
        cur.buckets[40] = 5; // restarted: all of it new
        prev.buckets[BUCKETS - 1] = u64::MAX - 1;
        cur.buckets[BUCKETS - 1] = 3; // wrapped
        vec![
            (cur, prev),
            (prev, cur),
            (cur, Hist::ZERO),
            (Hist::ZERO, prev),
            (cur, cur),
        ]
    }

    #[test]
    fn sparse_histograms_count_bucket_for_bucket_as_dense_ones() {
        for (cur, prev) in sparse_cases() {
            let (c, p) = (SparseHist::of(&cur), SparseHist::of(&prev));
            assert_eq!(c.to_dense(), cur);
            assert_eq!(c.count(), count(&cur));
            assert_eq!(
                SparseHist::delta(&c, Some(&p)).to_dense(),
                hist_delta(&cur, &prev)
            );
            assert_eq!(SparseHist::delta(&c, None).to_dense(), cur);
            // Unchanged: nothing at all, not even an allocation for the buckets.
            assert_eq!(SparseHist::delta(&c, Some(&c)).count(), 0);
            let mut dense = cur;
            hist_add(&mut dense, &prev);
            let mut sparse = c.clone();
            sparse.add(&p);
            assert_eq!(sparse.to_dense(), dense);
            let mut into = prev;
            c.add_to(&mut into);
            assert_eq!(into, dense);
        }
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
