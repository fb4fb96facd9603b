//! Latency percentiles over a finished run.

use std::time::Duration;

/// Summary of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
}

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts `samples` and summarises them.
pub fn summarise(samples: &mut [Duration]) -> Latency {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean =
        if samples.is_empty() { 0.0 } else { samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64 };
    Latency {
        p50_us: us(percentile(samples, 50.0)),
        p99_us: us(percentile(samples, 99.0)),
        mean_us: mean,
        max_us: samples.last().map_or(0.0, |d| us(*d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&n| Duration::from_micros(n)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = us(&(1..=100).rev().collect::<Vec<_>>());
        let l = summarise(&mut s);
        assert_eq!(l.p50_us, 50.0);
        assert_eq!(l.p99_us, 99.0);
        assert_eq!(l.max_us, 100.0);
        assert!((l.mean_us - 50.5).abs() < 1e-9);
    }

    #[test]
    fn single_and_empty() {
        assert_eq!(percentile(&us(&[7]), 99.0), Duration::from_micros(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
