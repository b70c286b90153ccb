//! The arithmetic of the measurements: latency percentiles, means and trends.

use std::time::Duration;

/// A latency in whole microseconds, as the latency lists keep them (u32: 71 minutes).
pub fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// The `p` quantile (0..=1, nearest rank) of sorted microsecond latencies, in ms; NaN when
/// there are none.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

/// The mean of the finite values (a missing sample is NaN); NaN when there are none.
pub fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Least-squares slope of `value` over time, per minute.
pub fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<&(f64, f64)> = points.iter().filter(|(_, y)| y.is_finite()).collect();
    if pts.len() < 2 {
        return f64::NAN;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        f64::NAN
    } else {
        sxy / sxx * 60.0
    }
}

/// The largest finite value; NaN when there is none.
pub fn max_finite(values: impl Iterator<Item = f64>) -> f64 {
    values.filter(|v| v.is_finite()).fold(f64::NAN, f64::max)
}
