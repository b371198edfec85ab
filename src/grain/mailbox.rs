//! The mailbox of one activation, and the task that drains it only while messages wait.
//!
//! An activation is not a long-lived task. Its state (the grain, its context and the turn
//! bookkeeping) sits in the mailbox while nothing is queued, so an idle activation costs a few
//! hundred bytes and no task, timer or channel. The first message that finds the mailbox idle
//! spawns a runner task, which takes the state out, handles that message and then the queued
//! ones in arrival order until the queue is empty, puts the state back and ends.
//!
//! # Why one message runs at a time
//!
//! 1. `running` and the queue sit under one lock. A sender that finds `running` false sets it
//!    and spawns the runner; every other sender only queues.
//! 2. The runner clears `running` under the same lock, and only once it found the queue empty,
//!    so a message queued before that is drained by it, and one queued after it starts a new
//!    runner. No message is left behind, and at most one runner has the state.
//! 3. Handling a message may spawn interleaved turns (see `super::activation`); they report
//!    back through this mailbox like any other message.
//!
//! A stopped mailbox refuses messages and gives them back to the sender, which resolves the
//! grain again.
//!
//! # Runners on the caller's task
//!
//! A local call that finds the mailbox idle may drive the runner on its own task instead of
//! spawning it (see [`ActivationRef::cast_inline`]): a turn that completes without waiting then
//! costs no task, no wake-up of another thread and no timer. The caller polls the runner only
//! until its own reply arrives. A [`Runner`] that is dropped unfinished spawns itself. So the
//! rest of the queue, or a turn that outlives the caller's deadline or the caller itself, goes
//! on as with a spawned runner, and the state is not lost.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::activation::{ActivationMsg, ActivationState, handle_message};
use super::turn::panic_message;

/// A handle on one activation's mailbox. Cheap to clone; every clone sends to the same one.
#[derive(Clone)]
pub(crate) struct ActivationRef(Arc<Mailbox>);

/// A handle that does not keep the activation alive, for its own context to hold.
#[derive(Clone, Default)]
pub(crate) struct WeakActivationRef(Weak<Mailbox>);

struct Mailbox {
    inner: Mutex<Inner>,
    /// Set by an interleaved turn that panicked, so that no turn starts after it.
    poisoned: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// Messages not yet taken by a runner.
    queue: VecDeque<ActivationMsg>,
    /// The activation's state while no runner has it; `None` before activation ends, while
    /// a runner drains the queue, and after the mailbox stopped.
    state: Option<ActivationState>,
    /// True while a runner task exists, or while the activation is still starting.
    running: bool,
    /// True once the activation stopped: messages are refused.
    stopped: bool,
    /// True once the activation left the node's catalog. Turns sent through a handle cached
    /// by an earlier call are rejected from then on (see [`ActivationRef::cast_turn_if_current`]).
    retired: bool,
}

impl ActivationRef {
    /// Creates the mailbox of an activation that is starting: it queues messages (such as timer
    /// ticks started by `on_activate`) until [`ActivationRef::start`] hands it the state.
    pub fn starting() -> Self {
        let inner = Inner {
            running: true,
            ..Inner::default()
        };
        Self(Arc::new(Mailbox {
            inner: Mutex::new(inner),
            poisoned: AtomicBool::new(false),
        }))
    }

    /// Gives the started activation's state to the mailbox, and drains what queued meanwhile.
    pub fn start(&self, state: ActivationState) {
        let mut inner = self.lock();
        debug_assert!(inner.running && inner.state.is_none(), "started twice");
        if inner.stopped {
            return;
        }
        match inner.queue.pop_front() {
            None => {
                inner.state = Some(state);
                inner.running = false;
            }
            Some(first) => {
                drop(inner);
                tokio::spawn(self.clone().run(state, first));
            }
        }
    }

    /// Queues `message`, starting a runner if none exists; gives the message back if the
    /// activation stopped.
    pub fn cast(&self, message: ActivationMsg) -> Result<(), ActivationMsg> {
        if let Some(runner) = self.cast_inline(message)? {
            runner.spawn();
        }
        Ok(())
    }

    /// Queues `message` and returns the runner for the caller to drive if the mailbox was idle
    /// (see the module documentation). Gives the message back if the activation stopped.
    pub fn cast_inline(&self, message: ActivationMsg) -> Result<Option<Runner>, ActivationMsg> {
        self.cast_inline_unless(message, false)
    }

    /// [`Self::cast_inline`] for a turn sent through a handle that the caller cached at an
    /// earlier call instead of finding it in the catalog. Gives the message back also once
    /// the activation has been retired.
    ///
    /// The check and the queueing share the mailbox lock with [`Self::retire`]. So a turn that
    /// passes the check was queued, with `pending` raised by its sender, before the activation
    /// was retired. It is then handled like a turn that found the activation in the catalog:
    /// it runs unless the activation has started to stop, which gives it back as
    /// `TurnError::Gone`. A stopping activation stops its mailbox only once `pending` is zero,
    /// so the turn is never dropped unanswered.
    pub fn cast_turn_if_current(
        &self,
        message: ActivationMsg,
    ) -> Result<Option<Runner>, ActivationMsg> {
        self.cast_inline_unless(message, true)
    }

    /// Marks the activation as retired: it has left the catalog, so turns sent through cached
    /// handles are rejected from now on. Called under the catalog's lock as the handle leaves it.
    pub fn retire(&self) {
        self.lock().retired = true;
    }

    fn cast_inline_unless(
        &self,
        message: ActivationMsg,
        reject_retired: bool,
    ) -> Result<Option<Runner>, ActivationMsg> {
        let mut inner = self.lock();
        if inner.stopped || (reject_retired && inner.retired) {
            return Err(message);
        }
        if inner.running {
            let mut message = message;
            if let ActivationMsg::Turn(turn) = &mut message {
                // The turn waits, so its start must read the clock.
                turn.sent_at = None;
            }
            inner.queue.push_back(message);
            return Ok(None);
        }
        // An idle mailbox has an empty queue, so the message goes straight to the runner.
        inner.running = true;
        let state = inner
            .state
            .take()
            .expect("an idle mailbox contains its activation's state");
        drop(inner);
        Ok(Some(Runner(Some(self.clone().run(state, message).boxed()))))
    }

    /// Stops the mailbox: later messages are refused, and queued ones are dropped once the
    /// running message ends. Called by the runner, or for an activation that failed to start.
    pub fn stop(&self) {
        let mut inner = self.lock();
        inner.stopped = true;
        let queue = std::mem::take(&mut inner.queue);
        let state = inner.state.take();
        drop(inner);
        // Dropped outside the lock: a grain's or a reply's drop may send to this mailbox.
        drop(queue);
        drop(state);
    }

    /// Returns whether the mailbox has stopped.
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Returns whether the activation is idle: its mailbox contains its state and no runner exists.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        let inner = self.lock();
        !inner.running && inner.state.is_some()
    }

    /// Marks the activation as poisoned by a panicking interleaved turn.
    pub fn poison(&self) {
        self.0.poisoned.store(true, Ordering::Release);
    }

    /// Returns whether an interleaved turn panicked.
    pub fn is_poisoned(&self) -> bool {
        self.0.poisoned.load(Ordering::Acquire)
    }

    pub fn downgrade(&self) -> WeakActivationRef {
        WeakActivationRef(Arc::downgrade(&self.0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.inner.lock().expect("mailbox lock poisoned")
    }

    /// Handles `first`, then queued messages until the queue is empty or the activation
    /// stops. The sender of `first` saw the mailbox open under the lock.
    async fn run(self, mut state: ActivationState, first: ActivationMsg) {
        if !self.handle(first, &mut state).await {
            return;
        }
        loop {
            let batch = {
                let mut inner = self.lock();
                if inner.stopped {
                    inner.queue.clear();
                    return;
                }
                if inner.queue.is_empty() {
                    inner.state = Some(state);
                    inner.running = false;
                    return;
                }
                std::mem::take(&mut inner.queue)
            };
            for message in batch {
                if self.is_stopped() {
                    // Messages after the stop are dropped, as queued ones are.
                    break;
                }
                if !self.handle(message, &mut state).await {
                    return;
                }
            }
        }
    }

    /// Handles one message. Returns false if it panicked, which stops the mailbox.
    async fn handle(&self, message: ActivationMsg, state: &mut ActivationState) -> bool {
        let handled = AssertUnwindSafe(handle_message(self, message, state))
            .catch_unwind()
            .await;
        if let Err(panic) = handled {
            let message = panic_message(&panic);
            tracing::error!(grain = %state.grain_id(), %message, "activation runner panicked; dropping the activation");
            state.abandon_after_panic();
            self.stop();
            return false;
        }
        // A busy activation must not hold its worker thread forever.
        tokio::task::consume_budget().await;
        true
    }
}

/// The runner of a mailbox that a sender found idle. Driving it runs the queued messages on
/// the driver's task. Dropping it unfinished spawns it, so the messages are not lost.
pub(crate) struct Runner(Option<BoxFuture<'static, ()>>);

impl Runner {
    /// Runs the rest of the queue on a task of its own.
    pub fn spawn(mut self) {
        if let Some(run) = self.0.take() {
            tokio::spawn(run);
        }
    }

    /// Polls the runner once, unless it finished; returns whether it has finished.
    pub fn poll_run(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let Some(run) = self.0.as_mut() else {
            return true;
        };
        if Pin::new(run).poll(cx).is_ready() {
            self.0 = None;
            return true;
        }
        false
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let Some(run) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run);
            }
            // Only a runtime that is shutting down drops a caller outside it, and the runtime's
            // activations end with it.
            Err(_) => tracing::debug!("dropping an unfinished activation runner outside a runtime"),
        }
    }
}

impl WeakActivationRef {
    /// Returns the mailbox if the activation still exists.
    pub fn upgrade(&self) -> Option<ActivationRef> {
        self.0.upgrade().map(ActivationRef)
    }
}

#[cfg(test)]
mod tests;
