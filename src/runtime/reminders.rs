//! Fires durable reminders: every node polls the store, leases due reminders, and calls them.
//!
//! 1. Every `reminder_poll_ms` the node claims up to [`CLAIM_LIMIT`] due reminders with a lease
//!    of [`LEASE`]; the store grants each reminder to one node at a time.
//! 2. For each lease it calls the grain's built-in reminder method through the ordinary call
//!    path, which activates the grain wherever placement puts it.
//! 3. It then completes the lease with the next due time (the first one after now, so a
//!    reminder that missed ticks while every node was down fires once, not once per tick), or
//!    deletes a one-shot reminder.
//!
//! A node that dies holding a lease leaves it to expire; another node claims the reminder
//! after [`LEASE`], so reminders keep firing after the node that held them died.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use super::node::{Node, unix_now_ms};
use crate::grain::methods::{ReminderTick, encoder_of};
use crate::grain::{Payload, REMINDER_METHOD};
use crate::storage::ReminderLease;

/// How long a claimed reminder stays leased to the claiming node.
const LEASE: Duration = Duration::from_secs(30);
/// Maximum number of reminders claimed per poll.
const CLAIM_LIMIT: u32 = 100;
/// Deadline of one reminder call.
const FIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls for due reminders until the node stops.
pub(crate) async fn run_reminder_loop(node: Node) {
    let period = Duration::from_millis(node.inner.config.reminder_poll_ms);
    let mut tick = tokio::time::interval(period);
    let owner = node.id().cluster_node_name();
    let limit = NonZeroU32::new(CLAIM_LIMIT).expect("the claim limit is not zero");
    loop {
        tick.tick().await;
        if *node.inner.stopped.borrow() {
            return;
        }
        if node.state() != crate::membership::NodeState::Active {
            continue;
        }
        let leases = match node
            .storage()
            .claim_due(unix_now_ms(), owner, LEASE, limit)
            .await
        {
            Ok(leases) => leases,
            Err(error) => {
                tracing::warn!(node = %node.id().name, %error, "cannot claim due reminders");
                continue;
            }
        };
        for lease in leases {
            let node = node.clone();
            tokio::spawn(async move { fire(&node, lease).await });
        }
    }
}

async fn fire(node: &Node, lease: ReminderLease) {
    let reminder = &lease.reminder;
    let tick = ReminderTick {
        name: reminder.name.clone(),
    };
    let payload = Payload::Local {
        value: Box::new(tick),
        encode: encoder_of::<ReminderTick>(),
    };
    let deadline = Instant::now() + FIRE_TIMEOUT;
    let result = node
        .invoke(reminder.grain.clone(), REMINDER_METHOD, payload, deadline)
        .await;
    if let Err(error) = &result {
        tracing::warn!(grain = %reminder.grain, reminder = %reminder.name, %error, "reminder call failed");
    }
    let now = unix_now_ms();
    let next_due = reminder.period_ms.map(|period| {
        let period = period.get();
        let missed = now.saturating_sub(reminder.due_at_unix_ms) / period + 1;
        reminder
            .due_at_unix_ms
            .saturating_add(missed.saturating_mul(period))
    });
    if let Err(error) = node.storage().complete(&lease, next_due).await {
        tracing::warn!(grain = %reminder.grain, reminder = %reminder.name, %error, "cannot complete reminder");
    }
}
