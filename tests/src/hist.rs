//! The bucket layout the spec promises, computed independently of observer's code: an
//! OpenTelemetry exponential histogram at scale 2 in nanoseconds, where bucket index `i` covers
//! `(2^(i/4), 2^((i+1)/4)]` ns.

/// Buckets per power of two at scale 2.
pub const PER_OCTAVE: f64 = 4.0;

/// `(lower, upper)` of bucket `i`.
pub fn bounds(i: i32) -> (f64, f64) {
    (
        (f64::from(i) / PER_OCTAVE).exp2(),
        (f64::from(i + 1) / PER_OCTAVE).exp2(),
    )
}

/// Index of the bucket holding a value of `v_ns` > 0 ns: the smallest `i` with
/// `v <= 2^((i+1)/4)`, i.e. `ceil(4 log2 v) - 1`.
pub fn index_of(v_ns: f64) -> i32 {
    assert!(v_ns > 0.0, "zero has no exponential bucket");
    let i = (PER_OCTAVE * v_ns.log2()).ceil() as i32 - 1;
    // Guard against rounding at exact boundaries.
    let (lo, hi) = bounds(i);
    if v_ns <= lo {
        i - 1
    } else if v_ns > hi {
        i + 1
    } else {
        i
    }
}

/// Index of the bucket whose upper bound is `upper` (as observer prints it), if `upper` is one.
pub fn index_of_upper(upper: f64) -> Option<i32> {
    if upper <= 0.0 {
        return None;
    }
    let i = (PER_OCTAVE * upper.log2()).round() as i32 - 1;
    let (_, hi) = bounds(i);
    close(hi, upper).then_some(i)
}

/// Relative float comparison for bucket bounds printed as f64.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_one_ms_is_in_the_bucket_from_47_to_56_ms() {
        let i = index_of(51e6);
        assert_eq!(i, 102);
        let (lo, hi) = bounds(i);
        assert!((lo - 47_453_132.8).abs() < 1.0, "{lo}");
        assert!((hi - 56_431_603.9).abs() < 1.0, "{hi}");
    }

    #[test]
    fn exact_powers_of_two_are_upper_inclusive() {
        // 2^10 ns closes bucket 39: (2^9.75, 2^10].
        assert_eq!(index_of(1024.0), 39);
        assert_eq!(index_of(1025.0), 40);
        assert_eq!(index_of(1.0), -1);
        assert_eq!(index_of_upper(1024.0), Some(39));
        assert_eq!(index_of_upper(1000.0), None);
    }
}
