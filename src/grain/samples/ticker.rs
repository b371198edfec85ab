//! The `ticker` grain: counts the firings of a durable reminder and of an in-memory timer, to
//! show and test both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::grain::{
    Grain, GrainContext, GrainError, Handler, InterleavedHandler, Method, Methods, SharedContext,
};

/// Name of the reminder that [`Start`] registers.
pub const TICK_REMINDER: &str = "tick";

/// Name of the timer that [`StartTimer`] starts.
pub const TICK_TIMER: &str = "beat";

/// Shortest accepted timer period, so that a timer cannot flood the storage with writes.
pub const MIN_TIMER_PERIOD: Duration = Duration::from_millis(50);

/// Shortest accepted tick period. Nodes poll for due reminders every `reminder_poll_ms`
/// (default 1000 ms), so a shorter period would fire late on every tick.
pub const MIN_TICK_PERIOD: Duration = Duration::from_secs(1);

/// A grain that counts how often its reminder and its timer fired. Both counts are persisted
/// on every tick, so they survive deactivation and the death of the node that hosted the grain.
/// The reminder keeps firing then, but the timer ends with its activation.
#[derive(Debug, Default)]
pub struct Ticker {
    state: TickerState,
}

/// The persisted state of a ticker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TickerState {
    /// Number of times the reminder fired.
    pub count: u64,
    /// Number of times the timer fired, over every activation.
    #[serde(default)]
    pub timer_ticks: u64,
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

/// Starts (or restarts) the timer [`TICK_TIMER`], which first fires one period from now and
/// then every period while this activation lives.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartTimer {
    /// Tick period in milliseconds, at least [`MIN_TIMER_PERIOD`].
    pub period_ms: u64,
}

/// Returns how many times the timer fired. Served in interleaved turns.
#[derive(Debug, Serialize, Deserialize)]
pub struct TimerCount;

impl Method for StartTimer {
    const NAME: &'static str = "start_timer";
    type Response = ();
}

impl Method for TimerCount {
    const NAME: &'static str = "timer_count";
    type Response = u64;
}

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
        methods
            .add::<Start>()
            .add::<Stop>()
            .add::<Count>()
            .add::<StartTimer>()
            .add_interleaved::<TimerCount>();
    }

    async fn on_timer(&mut self, name: &str, ctx: &mut GrainContext) -> Result<(), GrainError> {
        if name != TICK_TIMER {
            tracing::warn!(grain = %ctx.id(), timer = name, "ignoring an unknown timer");
            return Ok(());
        }
        let state = TickerState {
            timer_ticks: self.state.timer_ticks.saturating_add(1),
            ..self.state.clone()
        };
        ctx.write_state(&state).await?;
        self.state = state;
        Ok(())
    }

    async fn on_reminder(&mut self, name: &str, ctx: &mut GrainContext) -> Result<(), GrainError> {
        if name != TICK_REMINDER {
            tracing::warn!(grain = %ctx.id(), reminder = name, "ignoring an unknown reminder");
            return Ok(());
        }
        let state = TickerState {
            count: self.state.count.saturating_add(1),
            ..self.state.clone()
        };
        ctx.write_state(&state).await?;
        self.state = state;
        Ok(())
    }
}

/// Returns `period_ms` as a period, or the `invalid_period` error if it is below `min`.
fn checked_period(period_ms: u64, min: Duration) -> Result<Duration, GrainError> {
    let period = Duration::from_millis(period_ms);
    if period < min {
        return Err(GrainError::new(
            "invalid_period",
            format!(
                "period_ms must be at least {}, got {period_ms}",
                min.as_millis()
            ),
        ));
    }
    Ok(period)
}

impl Handler<Start> for Ticker {
    async fn handle(&mut self, request: Start, ctx: &mut GrainContext) -> Result<(), GrainError> {
        let period = checked_period(request.period_ms, MIN_TICK_PERIOD)?;
        ctx.register_reminder(TICK_REMINDER, period, Some(period))
            .await
    }
}

impl Handler<StartTimer> for Ticker {
    async fn handle(
        &mut self,
        request: StartTimer,
        ctx: &mut GrainContext,
    ) -> Result<(), GrainError> {
        let period = checked_period(request.period_ms, MIN_TIMER_PERIOD)?;
        ctx.start_timer(TICK_TIMER, period, Some(period));
        Ok(())
    }
}

impl InterleavedHandler<TimerCount> for Ticker {
    async fn handle(&self, _request: TimerCount, _ctx: &SharedContext) -> Result<u64, GrainError> {
        Ok(self.state.timer_ticks)
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
