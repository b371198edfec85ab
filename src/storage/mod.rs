//! Grain state persistence with optimistic concurrency (embedded SQLite, PostgreSQL).
