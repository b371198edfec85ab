//! Prometheus registry and the HTTP `/metrics` endpoint.

mod node_metrics;
mod server;

pub use node_metrics::NodeMetrics;
pub(crate) use server::serve;
