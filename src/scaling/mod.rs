//! The scaling supervisor: load model, policies, combiners, decisions and orchestrators.

pub mod orchestrator;
