//! A Prometheus histogram for the call path, whose observation is two relaxed atomic additions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

/// A histogram of values counted in whole units (nanoseconds, hops), exported in a larger
/// unit (seconds) or as they are.
///
/// `prometheus::Histogram` spends four atomic operations per observation, one of them a
/// compare-and-swap loop on a float sum, so that a scrape reads the count, the buckets and the
/// sum of the same observations. This one adds to one bucket and to an integer sum, and
/// derives the count from the buckets when scraped. So buckets and count always agree, and
/// the sum may include an observation or two that the buckets do not yet show. A grain call
/// records two or three histograms, so the difference shows in its latency.
#[derive(Clone)]
pub struct AtomicHistogram(Arc<Core>);

struct Core {
    desc: Desc,
    /// Upper bounds in units, ascending.
    bounds: Box<[u64]>,
    /// One counter per bound, and a last one for values above every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of the observed values, in units.
    sum: AtomicU64,
    /// Exported value of one unit.
    unit: f64,
}

impl AtomicHistogram {
    /// Creates the histogram `name` whose buckets end at `bounds` (exported values, ascending)
    /// and whose unit of observation is worth `unit` exported values.
    pub fn new(name: &str, help: &str, bounds: &[f64], unit: f64) -> prometheus::Result<Self> {
        if unit.is_nan() || unit <= 0.0 || bounds.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(prometheus::Error::Msg(format!(
                "histogram {name}: the unit must be positive and the bounds ascending"
            )));
        }
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            Vec::new(),
            Default::default(),
        )?;
        let bounds: Box<[u64]> = bounds
            .iter()
            .map(|bound| (bound / unit).round() as u64)
            .collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Ok(Self(Arc::new(Core {
            desc,
            bounds,
            counts,
            sum: AtomicU64::new(0),
            unit,
        })))
    }

    /// Records one value of `units`.
    pub fn observe_units(&self, units: u64) {
        let core = &*self.0;
        let bucket = core.bounds.partition_point(|bound| *bound < units);
        core.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // Most observations of the hops histogram are 0, and an addition of 0 changes nothing.
        if units > 0 {
            core.sum.fetch_add(units, Ordering::Relaxed);
        }
    }

    /// Records `elapsed` in a histogram whose unit is the nanosecond.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe_units(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Returns how many values were recorded.
    pub fn sample_count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Returns the sum of the recorded values, in exported units.
    pub fn sample_sum(&self) -> f64 {
        self.0.sum.load(Ordering::Relaxed) as f64 * self.0.unit
    }

    fn metric(&self) -> proto::Metric {
        let core = &*self.0;
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(core.bounds.len());
        for (bound, count) in core.bounds.iter().zip(core.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*bound as f64 * core.unit);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        if let Some(above) = core.counts.last() {
            cumulative += above.load(Ordering::Relaxed);
        }
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(cumulative);
        histogram.set_sample_sum(self.sample_sum());
        histogram.set_bucket(buckets);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        metric
    }
}

impl Collector for AtomicHistogram {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let mut family = proto::MetricFamily::default();
        family.set_name(self.0.desc.fq_name.clone());
        family.set_help(self.0.desc.help.clone());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        family.set_metric(vec![self.metric()]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, Registry, TextEncoder};

    use super::*;

    fn text(histogram: &AtomicHistogram) -> String {
        let registry = Registry::new();
        registry
            .register(Box::new(histogram.clone()))
            .expect("registers");
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encodes");
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn value_counts_in_first_fitting_bucket() {
        let hops = AtomicHistogram::new("hops", "hops per call", &[0.0, 1.0, 2.0], 1.0)
            .expect("valid options");
        for value in [0, 0, 1, 2, 2, 7] {
            hops.observe_units(value);
        }
        let text = text(&hops);
        assert!(text.contains("hops_bucket{le=\"0\"} 2\n"), "{text}");
        assert!(text.contains("hops_bucket{le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("hops_bucket{le=\"2\"} 5\n"), "{text}");
        assert!(text.contains("hops_bucket{le=\"+Inf\"} 6\n"), "{text}");
        assert!(text.contains("hops_sum 12\n"), "{text}");
        assert!(text.contains("hops_count 6\n"), "{text}");
        assert!(text.contains("# TYPE hops histogram"), "{text}");
    }

    #[test]
    fn durations_export_as_seconds() {
        let latency = AtomicHistogram::new("latency", "call latency", &[0.000_1, 0.001], 1e-9)
            .expect("valid options");
        latency.observe_duration(Duration::from_micros(100));
        latency.observe_duration(Duration::from_micros(101));
        latency.observe_duration(Duration::from_millis(5));
        assert_eq!(latency.sample_count(), 3);
        assert!((latency.sample_sum() - 0.005_201).abs() < 1e-12);
        let text = text(&latency);
        assert!(text.contains("latency_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("latency_bucket{le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("latency_bucket{le=\"+Inf\"} 3\n"), "{text}");
    }

    #[test]
    fn unordered_bounds_are_rejected() {
        let error = AtomicHistogram::new("h", "help", &[1.0, 1.0], 1.0)
            .err()
            .expect("rejected");
        assert!(error.to_string().contains("ascending"), "{error}");
    }
}
