//! Prometheus registry and the HTTP `/metrics` endpoint.

mod atomic_histogram;
mod node_metrics;
mod server;

pub use atomic_histogram::AtomicHistogram;
pub use node_metrics::NodeMetrics;
pub(crate) use server::serve;
