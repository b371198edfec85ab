//! The `counter` grain: an integer that calls add to and read.

use serde::{Deserialize, Serialize};

use crate::grain::{Grain, GrainContext, GrainError, Handler, Method, Methods};

/// A counter that starts at zero on activation.
#[derive(Debug, Default)]
pub struct Counter {
    value: i64,
}

/// Adds `amount` to the counter and returns the new value.
#[derive(Debug, Serialize, Deserialize)]
pub struct Add {
    /// The amount to add; may be negative.
    pub amount: i64,
}

/// Returns the counter's value.
#[derive(Debug, Serialize, Deserialize)]
pub struct Get;

impl Method for Add {
    const NAME: &'static str = "add";
    type Response = i64;
}

impl Method for Get {
    const NAME: &'static str = "get";
    type Response = i64;
}

impl Grain for Counter {
    const TYPE_NAME: &'static str = "counter";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Counter::default())
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Add>().add::<Get>();
    }
}

impl Handler<Add> for Counter {
    async fn handle(&mut self, request: Add, _ctx: &mut GrainContext) -> Result<i64, GrainError> {
        self.value = self
            .value
            .checked_add(request.amount)
            .ok_or_else(|| GrainError::new("overflow", "counter would overflow i64"))?;
        Ok(self.value)
    }
}

impl Handler<Get> for Counter {
    async fn handle(&mut self, _request: Get, _ctx: &mut GrainContext) -> Result<i64, GrainError> {
        Ok(self.value)
    }
}
