//! The one histogram layout every latency signal uses.
//!
//! Buckets are exactly those of an OpenTelemetry exponential histogram at scale 2 with the value
//! in nanoseconds: bucket index `i` covers `(2^(i/4), 2^((i+1)/4)]` ns (upper-inclusive, as OTLP
//! and Prometheus `le` both define it), so the agent can export the kernel's counts without
//! re-bucketing. Every `u64` value has a bucket: index -1 holds exactly 1 ns and index 255 holds
//! values up to `u64::MAX`, so nothing is clamped. Zero is counted on its own, as OTLP's
//! `zero_count`.

/// OTLP exponential histogram scale: each power of two is split into `2^SCALE` buckets.
pub const SCALE: i32 = 2;
/// Buckets per power of two.
pub const BUCKETS_PER_OCTAVE: usize = 1 << SCALE;
/// OTLP bucket index of slot 0 (the bucket `(2^-0.25, 1]`, which holds only the value 1).
pub const FIRST_INDEX: i32 = -1;
/// Number of non-zero buckets: indices -1 through 255.
pub const BUCKETS: usize = 64 * BUCKETS_PER_OCTAVE + 1;

/// `floor(2^(63 + j/4))` for j = 1, 2, 3: the interior bucket boundaries of one octave, with
/// the octave normalised so that its lower bound is `2^63`. A normalised value `m` lies above
/// boundary j exactly when `m > BOUNDARIES[j-1]`, because the true boundaries are irrational and
/// `m` is an integer.
pub const BOUNDARIES: [u64; 3] = [
    0x9837_f051_8db8_a96f,
    0xb504_f333_f9de_6484,
    0xd744_fcca_d69d_6af4,
];

/// A latency histogram as the kernel keeps it. Counts only ever grow; the agent takes deltas.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    /// Values equal to zero.
    pub zero: u64,
    /// Sum of all values, in nanoseconds (wraps after ~584 years of accumulated latency).
    pub sum: u64,
    /// `buckets[s]` counts values in OTLP bucket index `s as i32 + FIRST_INDEX`.
    pub buckets: [u64; BUCKETS],
}

const _: () = assert!(core::mem::size_of::<Hist>() == (BUCKETS + 2) * 8);

impl Hist {
    pub const ZERO: Self = Self {
        zero: 0,
        sum: 0,
        buckets: [0; BUCKETS],
    };
}

/// The slot in [`Hist::buckets`] for a non-zero value, in O(1) without loops (the BPF verifier
/// accepts it in any program).
///
/// For `v` in `(2^e, 2^(e+1)]`: shift `v` so its top bit is bit 63 and count how many of the
/// three interior boundaries it exceeds. An exact power of two `2^e` belongs to the bucket
/// below it (upper-inclusive), index `4e - 1`.
#[inline(always)]
pub const fn slot(v: u64) -> usize {
    debug_assert!(v != 0);
    let lz = v.leading_zeros();
    let e = (63 - lz) as usize;
    let m = v << lz;
    let above_octave_start = (m != 1 << 63) as usize;
    let sub =
        (m > BOUNDARIES[0]) as usize + (m > BOUNDARIES[1]) as usize + (m > BOUNDARIES[2]) as usize;
    BUCKETS_PER_OCTAVE * e + above_octave_start + sub
}

/// OTLP bucket index of a slot.
#[inline]
pub const fn slot_index(slot: usize) -> i32 {
    slot as i32 + FIRST_INDEX
}
