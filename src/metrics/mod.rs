//! Prometheus registry and the HTTP `/metrics` endpoint.
