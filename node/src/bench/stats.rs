//! Closed-loop load with a fixed number of calls in flight, and the latency and rate it measured.

use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One client of a closed loop: it issues the next call as soon as the previous one returned.
pub trait Worker: Send + 'static {
    /// Makes one call and waits for its reply. An error ends the measurement.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
}

impl Percentiles {
    /// Reads the percentiles of a histogram of nanoseconds.
    pub fn of_nanos(histogram: &Histogram<u64>) -> Percentiles {
        let micros = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1_000.0;
        Percentiles {
            p50_us: micros(0.50),
            p99_us: micros(0.99),
            p999_us: micros(0.999),
        }
    }

    /// Computes the percentiles of samples in microseconds, by rank.
    pub fn of_samples(samples: &mut [f64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let at = |quantile: f64| {
            let rank = (quantile * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Some(Percentiles {
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
        })
    }
}

/// Operations completed in a measured interval, with their latency when it was recorded.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// Completed operations.
    pub ops: u64,
    /// Length of the measured interval, in seconds.
    pub elapsed_secs: f64,
    /// Latency of the operations, if each one was timed.
    pub latency: Option<Percentiles>,
}

impl Measurement {
    /// Returns the completed operations per second.
    pub fn rate_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.ops as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("the bounds are valid")
}

/// Runs every worker in its own task, each with one call in flight, for `warmup` unrecorded
/// and then `duration` recorded, and returns the merged measurement.
pub async fn closed_loop<W: Worker>(
    workers: Vec<W>,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement, String> {
    let started = Instant::now();
    let recording_from = started + warmup;
    let recording_until = recording_from + duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            tokio::spawn(async move {
                let mut histogram: Histogram<u64> = new_histogram();
                loop {
                    let call_started = Instant::now();
                    if call_started >= recording_until {
                        return Ok::<Histogram<u64>, String>(histogram);
                    }
                    worker.call().await?;
                    if call_started >= recording_from {
                        let nanos = call_started.elapsed().as_nanos();
                        histogram.saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
                    }
                }
            })
        })
        .collect();
    let mut merged = new_histogram();
    for task in tasks {
        let histogram: Histogram<u64> = task
            .await
            .map_err(|error| format!("load task failed: {error}"))??;
        merged
            .add(&histogram)
            .map_err(|error| format!("cannot merge latency histograms: {error}"))?;
    }
    Ok(Measurement {
        ops: merged.len(),
        elapsed_secs: duration.as_secs_f64(),
        latency: Some(Percentiles::of_nanos(&merged)),
    })
}

/// Returns the warm-up before a recorded interval of `duration`: a tenth of it, at most 1 s.
pub fn warmup_for(duration: Duration) -> Duration {
    (duration / 10).min(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rank() {
        let mut samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        let percentiles = Percentiles::of_samples(&mut samples).expect("samples exist");
        assert_eq!(percentiles.p50_us, 500.0);
        assert_eq!(percentiles.p99_us, 990.0);
        assert_eq!(percentiles.p999_us, 999.0);
    }

    #[test]
    fn percentiles_of_nothing_are_none() {
        assert!(Percentiles::of_samples(&mut []).is_none());
    }

    struct Sleeper;

    impl Worker for Sleeper {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_counts_recorded_calls_only() {
        let workers = vec![Sleeper, Sleeper];
        let measurement = closed_loop(workers, Duration::from_millis(100), Duration::from_secs(1))
            .await
            .expect("sleepers never fail");
        // Two workers at 10 ms per call over 1 s, the warm-up excluded.
        assert_eq!(measurement.ops, 200);
        let latency = measurement.latency.expect("calls were timed");
        assert!((latency.p50_us - 10_000.0).abs() < 50.0, "{latency:?}");
    }
}
