//! The `ticker` grain: counts the firings of a durable reminder, to show and test reminders.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::grain::{Grain, GrainContext, GrainError, Handler, Method, Methods};

/// Name of the reminder that [`Start`] registers.
pub const TICK_REMINDER: &str = "tick";

/// Shortest accepted tick period. Nodes poll for due reminders every `reminder_poll_ms`
/// (default 1000 ms), so a shorter period would fire late on every tick.
pub const MIN_TICK_PERIOD: Duration = Duration::from_secs(1);

/// A grain that counts how often its reminder fired. The count is persisted on every tick,
/// so it survives deactivation and the death of the node that hosted the grain.
#[derive(Debug, Default)]
pub struct Ticker {
    state: TickerState,
}

/// The persisted state of a ticker.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TickerState {
    /// Number of times the reminder fired.
    pub count: u64,
}

/// Registers (or replaces) the reminder [`TICK_REMINDER`], which first fires one period from
/// now and then every period.
#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    /// Tick period in milliseconds, at least [`MIN_TICK_PERIOD`].
    pub period_ms: u64,
}

/// Unregisters the reminder and returns whether it was registered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stop;

/// Returns how many times the reminder fired.
#[derive(Debug, Serialize, Deserialize)]
pub struct Count;

impl Method for Start {
    const NAME: &'static str = "start";
    type Response = ();
}

impl Method for Stop {
    const NAME: &'static str = "stop";
    type Response = bool;
}

impl Method for Count {
    const NAME: &'static str = "count";
    type Response = u64;
}

impl Grain for Ticker {
    const TYPE_NAME: &'static str = "ticker";

    async fn activate(ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Ticker {
            state: ctx.read_state().await?,
        })
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Start>().add::<Stop>().add::<Count>();
    }

    async fn on_reminder(&mut self, name: &str, ctx: &mut GrainContext) -> Result<(), GrainError> {
        if name != TICK_REMINDER {
            tracing::warn!(grain = %ctx.id(), reminder = name, "ignoring an unknown reminder");
            return Ok(());
        }
        let count = self.state.count.saturating_add(1);
        ctx.write_state(&TickerState { count }).await?;
        self.state.count = count;
        Ok(())
    }
}

impl Handler<Start> for Ticker {
    async fn handle(&mut self, request: Start, ctx: &mut GrainContext) -> Result<(), GrainError> {
        let period = Duration::from_millis(request.period_ms);
        if period < MIN_TICK_PERIOD {
            return Err(GrainError::new(
                "invalid_period",
                format!(
                    "period_ms must be at least {}, got {}",
                    MIN_TICK_PERIOD.as_millis(),
                    request.period_ms
                ),
            ));
        }
        ctx.register_reminder(TICK_REMINDER, period, Some(period))
            .await
    }
}

impl Handler<Stop> for Ticker {
    async fn handle(&mut self, _request: Stop, ctx: &mut GrainContext) -> Result<bool, GrainError> {
        ctx.unregister_reminder(TICK_REMINDER).await
    }
}

impl Handler<Count> for Ticker {
    async fn handle(
        &mut self,
        _request: Count,
        _ctx: &mut GrainContext,
    ) -> Result<u64, GrainError> {
        Ok(self.state.count)
    }
}
