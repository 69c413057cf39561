//! Latency percentiles, and the `get` measurement.

use std::time::{Duration, Instant};

use context_graph_storage::{RocksDbTeleologicalStore, TeleologicalArrayStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Percentiles of a set of timings.
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    pub p50: Duration,
    pub p99: Duration,
    pub samples: usize,
}

impl Latencies {
    pub fn new(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = |p: f64| -> Duration {
            if times.is_empty() {
                return Duration::ZERO;
            }
            let r = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len());
            times[r - 1]
        };
        Self { p50: rank(0.50), p99: rank(0.99), samples: times.len() }
    }
}

/// `retrieve` of `samples` ids drawn at random (seeded) from the stored ones, one at a time.
pub async fn measure_get(
    store: &RocksDbTeleologicalStore,
    ids: &[Uuid],
    samples: usize,
    seed: u64,
) -> anyhow::Result<Latencies> {
    if ids.is_empty() {
        return Ok(Latencies::new(Vec::new()));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let id = ids[rng.random_range(0..ids.len())];
        let t = Instant::now();
        store.retrieve(id).await?;
        times.push(t.elapsed());
    }
    Ok(Latencies::new(times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latencies::new(times);
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(Latencies::new(vec![Duration::from_millis(7)]).p99, Duration::from_millis(7));
    }
}
