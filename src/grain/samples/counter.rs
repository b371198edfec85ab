//! The `counter` grain: a persisted integer that calls add to and read.

use serde::{Deserialize, Serialize};

use crate::grain::{Grain, GrainContext, GrainError, Handler, Method, Methods};

/// A counter whose value is persisted after every change; a new counter reads zero.
#[derive(Debug, Default)]
pub struct Counter {
    state: CounterState,
}

/// The persisted state of a counter.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CounterState {
    /// The counter's value.
    pub value: i64,
}

/// Adds `amount` to the counter and returns the new value once it is stored.
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

    async fn activate(ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Counter {
            state: ctx.read_state().await?,
        })
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Add>().add::<Get>();
    }
}

impl Handler<Add> for Counter {
    async fn handle(&mut self, request: Add, ctx: &mut GrainContext) -> Result<i64, GrainError> {
        let value = self
            .state
            .value
            .checked_add(request.amount)
            .ok_or_else(|| GrainError::new("overflow", "counter would overflow i64"))?;
        // Acknowledge only what is stored: change memory after the write succeeded.
        ctx.write_state(&CounterState { value }).await?;
        self.state.value = value;
        Ok(value)
    }
}

impl Handler<Get> for Counter {
    async fn handle(&mut self, _request: Get, _ctx: &mut GrainContext) -> Result<i64, GrainError> {
        Ok(self.state.value)
    }
}
