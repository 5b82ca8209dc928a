//! Deterministic observations for the native histogram tests (`tests/native.rs`,
//! `tests/redis_native.rs`): the same streams, so both check the same buckets.

/// Deterministic observations of stream `n`: durations from 0.1 ms to 10 s, a few zeros and a
/// few negative values (a clock step).
pub(crate) fn values(n: u64, count: usize) -> Vec<f64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n + 1);
    (0..count)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            match i % 50 {
                0 => 0.0,
                1 => -0.001 * (1.0 + u),
                _ => 1e-4 * 10f64.powf(5.0 * u),
            }
        })
        .collect()
}
