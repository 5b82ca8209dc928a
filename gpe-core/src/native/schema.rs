//! The exponential bucket schemas of Prometheus native histograms: which bucket a value falls
//! in, and how buckets combine when the resolution is reduced.
//!
//! At schema `s`, bucket `i` holds the values in `(2^((i-1)·2^-s), 2^(i·2^-s)]` (upper bound
//! inclusive, as classic buckets). Each power of two is split into `2^s` buckets; schema `s - 1`
//! has buckets twice as wide, and bucket `j` of it is exactly buckets `2j - 1` and `2j` of schema
//! `s`, so reducing the resolution merges counts without error. The indexing is client_golang's
//! (`histogram.go`, `nativeHistogramBounds` and `findBucket`).

use std::sync::OnceLock;

/// The lowest schema Prometheus accepts (each bucket spans a factor of 2^16).
pub const MIN_SCHEMA: i8 = -4;
/// The highest schema Prometheus accepts (256 buckets per power of two).
pub const MAX_SCHEMA: i8 = 8;

/// `v` as `frac · 2^exp` with `frac` in `[0.5, 1)`, for finite `v > 0` (Go's `math.Frexp`).
#[inline]
pub(crate) fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first.
        let (frac, exp) = frexp(v * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (frac, exp - 54);
    }
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, biased - 1022)
}

/// For schema `s > 0`, where in a power of two a value falls, found with one table lookup and
/// one comparison instead of a search.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// The lower bounds of the `2^s` buckets of one power of two, as fractions in `[0.5, 1)`
    /// (`0.5 · 2^(j / 2^s)`), then 1.0 (above every fraction).
    bounds: Box<[f64]>,
    /// For each of the `2^(s+1)` equal slices of `[0.5, 1)` (by the top `s + 1` bits of the
    /// mantissa): how many bounds lie below the slice's start. Slices are narrower than buckets
    /// (a bucket is at least `ln 2 / 2^(s+1)` wide), so at most one bound lies inside a slice.
    below: Box<[u16]>,
    /// `52 - (s + 1)`: the shift that leaves a mantissa's top `s + 1` bits.
    shift: u32,
}

impl Lookup {
    fn new(schema: i8) -> Lookup {
        let n = 1u32 << schema;
        let mut bounds: Vec<f64> = (0..n)
            .map(|j| 0.5 * (f64::from(j) / f64::from(n)).exp2())
            .collect();
        let slices = 2 * n;
        let below = (0..slices)
            .map(|t| {
                let start = 0.5 + 0.5 * f64::from(t) / f64::from(slices);
                bounds.iter().filter(|&&b| b < start).count() as u16
            })
            .collect();
        bounds.push(1.0);
        Lookup {
            bounds: bounds.into(),
            below,
            shift: 52 - (u32::from(schema as u8) + 1),
        }
    }

    /// How many bounds lie below `frac` (in `[0.5, 1)`, with mantissa bits `mantissa`).
    #[inline]
    fn position(&self, frac: f64, mantissa: u64) -> i32 {
        let below = self.below[(mantissa >> self.shift) as usize & (self.below.len() - 1)];
        let next = self.bounds[usize::from(below)];
        i32::from(below) + i32::from(next < frac)
    }

    fn per_power(&self) -> i32 {
        (self.bounds.len() - 1) as i32
    }
}

/// The [`Lookup`] of schema `s > 0`, made once.
pub(crate) fn lookup(schema: i8) -> &'static Lookup {
    static TABLES: [OnceLock<Lookup>; MAX_SCHEMA as usize] =
        [const { OnceLock::new() }; MAX_SCHEMA as usize];
    debug_assert!((1..=MAX_SCHEMA).contains(&schema));
    TABLES[schema as usize - 1].get_or_init(|| Lookup::new(schema))
}

/// The bucket index of `v` (`v > 0`, `+Inf` allowed) at `schema`. `lookup` is
/// [`lookup(schema)`](lookup) for a positive schema (looked up once by the caller), unused
/// otherwise.
#[inline]
pub(crate) fn index(v: f64, schema: i8, lookup: Option<&Lookup>) -> i32 {
    if v.is_infinite() {
        return index(f64::MAX, schema, lookup) + 1;
    }
    let (frac, exp) = frexp(v);
    match lookup {
        Some(l) if schema > 0 => {
            // The first bound at or above `frac`: an exact power of two (frac 0.5) is the
            // upper bound of its bucket.
            let mantissa = frac.to_bits() & ((1 << 52) - 1);
            l.position(frac, mantissa) + (exp - 1) * l.per_power()
        }
        _ => {
            let key = if frac == 0.5 { exp - 1 } else { exp };
            let shift = -i32::from(schema.min(0));
            let offset = (1 << shift) - 1;
            (key + offset) >> shift
        }
    }
}

/// The index at schema `to` of bucket `i` of schema `from` (`to <= from`).
#[inline]
pub(crate) fn reduce(i: i32, from: i8, to: i8) -> i32 {
    debug_assert!(to <= from);
    let k = u32::from((from - to) as u8);
    let widened = (i64::from(i) + (1i64 << k) - 1) >> k;
    widened as i32
}

/// The upper bound of bucket `i` at `schema`: `2^(i · 2^-schema)`.
pub(crate) fn upper_bound(i: i32, schema: i8) -> f64 {
    (f64::from(i) * (-f64::from(schema)).exp2()).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(v: f64, s: i8) -> i32 {
        index(v, s, (s > 0).then(|| lookup(s)))
    }

    #[test]
    fn the_lookup_agrees_with_a_search_of_the_bounds() {
        for s in 1..=MAX_SCHEMA {
            let n = 1u32 << s;
            let bounds: Vec<f64> = (0..n)
                .map(|j| 0.5 * (f64::from(j) / f64::from(n)).exp2())
                .collect();
            let l = lookup(s);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for k in 0..20_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Random fractions, and the bounds themselves and their neighbours.
                let frac = match k % 4 {
                    0 => bounds[(x as usize) % bounds.len()],
                    1 => f64::from_bits(bounds[(x as usize) % bounds.len()].to_bits() + 1),
                    2 => f64::from_bits(bounds[(x as usize) % bounds.len()].to_bits() - 1).max(0.5),
                    _ => 0.5f64.mul_add((x >> 11) as f64 / (1u64 << 53) as f64, 0.5),
                };
                let want = bounds.partition_point(|&b| b < frac) as i32;
                let mantissa = frac.to_bits() & ((1 << 52) - 1);
                assert_eq!(l.position(frac, mantissa), want, "schema {s} frac {frac}");
            }
        }
    }

    #[test]
    fn frexp_matches_go() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(8.0), (0.5, 4));
        let (f, e) = frexp(f64::MIN_POSITIVE / 4.0);
        assert_eq!((f, e), (0.5, -1023));
    }

    #[test]
    fn buckets_hold_their_upper_bound_and_not_their_lower() {
        for s in MIN_SCHEMA..=MAX_SCHEMA {
            for i in [-40, -3, -1, 0, 1, 2, 7, 33] {
                let ub = upper_bound(i, s);
                assert_eq!(idx(ub, s), i, "upper bound of bucket {i} at schema {s}");
                let above = ub * (1.0 + 1e-9);
                assert_eq!(idx(above, s), i + 1, "just above bucket {i} at schema {s}");
            }
        }
    }

    #[test]
    fn known_indices() {
        // client_golang's documented examples: schema 0 buckets are (2^(i-1), 2^i].
        assert_eq!(idx(1.0, 0), 0);
        assert_eq!(idx(1.5, 0), 1);
        assert_eq!(idx(2.0, 0), 1);
        assert_eq!(idx(3.0, 0), 2);
        assert_eq!(idx(0.3, 0), -1);
        // Schema 3: 8 buckets per power of two.
        assert_eq!(idx(2.0, 3), 8);
        assert_eq!(idx(0.001, 3), -79); // 2^(-80/8) = 0.000977 < 0.001 <= 2^(-79/8)
                                        // Schema -1: each bucket spans a factor of 4.
        assert_eq!(idx(4.0, -1), 1);
        assert_eq!(idx(5.0, -1), 2);
        assert_eq!(idx(f64::INFINITY, 0), idx(f64::MAX, 0) + 1);
    }

    #[test]
    fn reducing_merges_exactly_two_into_one() {
        for s in (MIN_SCHEMA + 1)..=MAX_SCHEMA {
            for v in [1e-9, 0.003, 0.25, 1.0, 1.7, 3.9, 1234.5, 9e15] {
                assert_eq!(
                    reduce(idx(v, s), s, s - 1),
                    idx(v, s - 1),
                    "v {v} schema {s}"
                );
                assert_eq!(reduce(idx(v, s), s, MIN_SCHEMA), idx(v, MIN_SCHEMA));
            }
        }
    }
}
