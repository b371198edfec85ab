//! The evaluator end to end: limits in order, actions, outcomes, manual requests.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::clock::Millis;
use crate::scaling::config::ScalingConfig;
use crate::scaling::decision::{Action, ActionOutcome, AppliedLimit, DecisionId, Trigger};
use crate::scaling::evaluator::{RequestError, ScalingCore};

use super::{cpu_config, incarnation, nodes_at_cpu, snapshot};

fn secs(seconds: u64) -> Millis {
    Millis(seconds * 1_000)
}

fn core(config: ScalingConfig) -> ScalingCore {
    ScalingCore::new(config).expect("test config is valid")
}

/// Evaluates `count` nodes at `cpu_percent` at second `second`.
fn evaluate(core: &mut ScalingCore, count: usize, cpu_percent: f64, second: u64) -> Action {
    core.handle_evaluation(snapshot(nodes_at_cpu(count, cpu_percent)), secs(second))
        .action
}

#[test]
fn scale_out_waits_for_stabilization_window() {
    // Goal: high load must persist for the 30 s scale-out window before nodes are added.
    let mut core = core(cpu_config());
    assert_eq!(
        evaluate(&mut core, 2, 10.0, 0),
        Action::None,
        "low load records 1 node"
    );
    assert_eq!(
        evaluate(&mut core, 2, 100.0, 15),
        Action::None,
        "30 s window still holds 1"
    );
    let decision = core.handle_evaluation(snapshot(nodes_at_cpu(2, 100.0)), secs(31));
    assert_eq!(decision.action, Action::ScaleOut { nodes: 2 });
    assert_eq!(decision.target_nodes, 4);
}

#[test]
fn scale_in_waits_for_stabilization_window() {
    let mut core = core(cpu_config());
    assert_eq!(evaluate(&mut core, 4, 50.0, 0), Action::None);
    for second in (15..300).step_by(15) {
        let decision = core.handle_evaluation(snapshot(nodes_at_cpu(4, 10.0)), secs(second));
        assert_eq!(decision.action, Action::None, "at {second} s");
        let held = decision
            .limits
            .iter()
            .any(|limit| matches!(limit, AppliedLimit::Stabilization { .. }));
        assert!(
            held,
            "at {second} s the window must be recorded as the reason"
        );
        assert!(
            decision
                .summary
                .contains("scale_in stabilization window of 300s"),
            "at {second} s the summary names the window: {}",
            decision.summary
        );
    }
    // The 50 % sample from 0 s is exactly 300 s old now, which HPA also no longer counts.
    let decision = core.handle_evaluation(snapshot(nodes_at_cpu(4, 10.0)), secs(300));
    assert_eq!(
        decision.target_nodes, 3,
        "the default scale-in rate is 1 node per 60 s"
    );
    assert!(matches!(decision.action, Action::ScaleIn { ref nodes } if nodes.len() == 1));
}

#[test]
fn joined_node_starts_new_scale_in_window() {
    // Goal: a node that joins after the supervisor's first evaluation (an operator started
    // it, or it was still joining at the takeover) is not removed before a whole scale-in
    // window of low load has passed since it joined.
    let mut core = core(cpu_config());
    assert_eq!(evaluate(&mut core, 2, 10.0, 0), Action::None);
    for second in (15..300).step_by(15) {
        let action = evaluate(&mut core, 3, 10.0, 240 + second);
        assert_eq!(action, Action::None, "at {} s, 3 nodes", 240 + second);
    }
    let decision = core.handle_evaluation(snapshot(nodes_at_cpu(3, 10.0)), secs(555));
    assert_eq!(
        decision.target_nodes, 2,
        "the window of the join has passed"
    );
    assert!(matches!(decision.action, Action::ScaleIn { ref nodes } if nodes.len() == 1));
}

#[test]
fn oscillating_load_does_not_flap() {
    // Goal: load that swings every 20 s, faster than either window, causes no action.
    let mut core = core(cpu_config());
    for step in 0..60 {
        let cpu = if step % 2 == 0 { 100.0 } else { 10.0 };
        let action = evaluate(&mut core, 4, cpu, step * 20);
        assert_eq!(action, Action::None, "step {step} at cpu {cpu}");
    }
}

#[test]
fn tolerance_holds_small_deviation() {
    let mut core = core(cpu_config());
    let decision = core.handle_evaluation(snapshot(nodes_at_cpu(4, 54.0)), secs(0));
    assert_eq!(decision.action, Action::None);
    assert_eq!(decision.target_nodes, 4);
    let tolerance = decision
        .limits
        .iter()
        .any(|limit| matches!(limit, AppliedLimit::Tolerance { .. }));
    assert!(tolerance, "{:?}", decision.limits);
}

#[test]
fn min_and_max_bound_target() {
    let config = ScalingConfig {
        min_nodes: NonZeroU32::new(2).unwrap(),
        max_nodes: NonZeroU32::new(5).unwrap(),
        ..cpu_config()
    };
    // (nodes, cpu, expected target, expected limit)
    let cases = [
        (
            4,
            200.0,
            5,
            Some(AppliedLimit::MaxNodes { max: 5, from: 8 }),
        ),
        (1, 50.0, 2, Some(AppliedLimit::MinNodes { min: 2, from: 1 })),
        (7, 50.0, 5, Some(AppliedLimit::MaxNodes { max: 5, from: 7 })),
        (3, 50.0, 3, None),
    ];
    for (count, cpu, expected, limit) in cases {
        let mut core = core(ScalingConfig {
            scale_out: crate::scaling::ScalingRules {
                stabilization_window: Duration::ZERO,
                ..config.scale_out.clone()
            },
            ..config.clone()
        });
        let decision = core.handle_evaluation(snapshot(nodes_at_cpu(count, cpu)), secs(0));
        assert_eq!(decision.target_nodes, expected, "{count} nodes at {cpu}");
        assert!(
            !decision.summary.contains("1 nodes"),
            "{count} nodes: {}",
            decision.summary
        );
        if let Some(limit) = limit {
            let bound = match limit {
                AppliedLimit::MinNodes { .. } => "min_nodes",
                _ => "max_nodes",
            };
            assert!(
                decision.summary.contains(bound),
                "{count} nodes: {}",
                decision.summary
            );
            assert!(
                decision.limits.contains(&limit),
                "{count} nodes: {:?}",
                decision.limits
            );
        }
    }
}

#[test]
fn joining_nodes_hold_back_scale_out() {
    // Goal: a supervisor that acts while the cluster forms does not add nodes for the ones
    // still joining, which would overshoot and drain one of them again.
    let config = ScalingConfig {
        min_nodes: NonZeroU32::new(3).unwrap(),
        max_nodes: NonZeroU32::new(3).unwrap(),
        ..eager_config()
    };
    let mut nodes = nodes_at_cpu(3, 50.0);
    nodes[1].state = crate::membership::NodeState::Joining;
    nodes[2].state = crate::membership::NodeState::Joining;
    let mut core = core(config.clone());
    let decision = core.handle_evaluation(snapshot(nodes.clone()), secs(0));
    assert_eq!(decision.target_nodes, 3, "min_nodes raises the target");
    assert_eq!(decision.action, Action::None, "{}", decision.summary);
    assert!(
        decision
            .summary
            .contains("2 joining nodes count once Active"),
        "{}",
        decision.summary
    );

    // One joining node stands for one of the two missing nodes: only the other is added.
    nodes.truncate(2);
    let mut core = self::core(config);
    let decision = core.handle_evaluation(snapshot(nodes), secs(0));
    assert_eq!(decision.action, Action::ScaleOut { nodes: 1 });
    assert!(
        decision.summary.contains("(1 Active and 1 joining node)"),
        "{}",
        decision.summary
    );
}

/// Returns a config without stabilization, so each test below checks one rule.
fn eager_config() -> ScalingConfig {
    let mut config = cpu_config();
    config.scale_out.stabilization_window = Duration::ZERO;
    config.scale_in.stabilization_window = Duration::ZERO;
    config
}

#[test]
fn running_action_blocks_next_action() {
    let mut core = core(eager_config());
    let first = core.handle_evaluation(snapshot(nodes_at_cpu(2, 100.0)), secs(0));
    assert_eq!(first.action, Action::ScaleOut { nodes: 2 });

    let second = core.handle_evaluation(snapshot(nodes_at_cpu(2, 100.0)), secs(15));
    assert_eq!(second.action, Action::None);
    assert!(
        second
            .limits
            .contains(&AppliedLimit::ActionInProgress { decision: first.id })
    );
    assert_eq!(core.status(secs(15)).running_action, Some(first.id));
}

#[test]
fn cooldown_follows_action_outcome() {
    let mut core = core(ScalingConfig {
        cooldown: Duration::from_secs(60),
        ..eager_config()
    });
    let first = core.handle_evaluation(snapshot(nodes_at_cpu(2, 100.0)), secs(0));
    let recorded = core
        .handle_action_outcome(
            first.id,
            ActionOutcome::Succeeded,
            Vec::new(),
            Vec::new(),
            secs(20),
        )
        .expect("the action is running");
    assert_eq!(recorded.outcome, Some(ActionOutcome::Succeeded));
    assert_eq!(recorded.duration, Some(Duration::from_secs(20)));

    let during = core.handle_evaluation(snapshot(nodes_at_cpu(4, 100.0)), secs(50));
    assert_eq!(during.action, Action::None);
    let cooldown = AppliedLimit::Cooldown {
        remaining: Duration::from_secs(30),
    };
    assert!(during.limits.contains(&cooldown), "{:?}", during.limits);

    let after = core.handle_evaluation(snapshot(nodes_at_cpu(4, 100.0)), secs(80));
    assert_eq!(after.action, Action::ScaleOut { nodes: 4 });
}

#[test]
fn rate_history_counts_completed_nodes_only() {
    let mut config = eager_config();
    config.scale_out.policies = vec![crate::scaling::RatePolicy::Nodes {
        value: NonZeroU32::new(2).unwrap(),
        period: Duration::from_secs(60),
    }];
    let mut core = core(config);
    let first = core.handle_evaluation(snapshot(nodes_at_cpu(2, 200.0)), secs(0));
    assert_eq!(first.action, Action::ScaleOut { nodes: 2 });
    let failed = ActionOutcome::Failed {
        completed_nodes: 1,
        error: "quota exceeded".into(),
    };
    core.handle_action_outcome(first.id, failed, Vec::new(), Vec::new(), secs(5))
        .unwrap();

    let next = core.handle_evaluation(snapshot(nodes_at_cpu(3, 200.0)), secs(10));
    assert_eq!(
        next.action,
        Action::ScaleOut { nodes: 1 },
        "one of two per 60 s is left"
    );
}

#[test]
fn outcome_for_idle_decision_is_rejected() {
    let mut core = core(eager_config());
    let decision = core.handle_evaluation(snapshot(nodes_at_cpu(2, 50.0)), secs(0));
    let error = core
        .handle_action_outcome(
            decision.id,
            ActionOutcome::Succeeded,
            Vec::new(),
            Vec::new(),
            secs(1),
        )
        .unwrap_err();
    assert_eq!(
        error,
        RequestError::NotRunning {
            decision: decision.id
        }
    );
}

#[test]
fn pause_holds_automatic_actions_only() {
    let mut core = core(eager_config());
    assert!(core.maybe_pause("maintenance".into()));
    assert!(!core.maybe_pause("again".into()));

    let decision = core.handle_evaluation(snapshot(nodes_at_cpu(2, 100.0)), secs(0));
    assert_eq!(decision.action, Action::None);
    let paused = AppliedLimit::Paused {
        reason: "maintenance".into(),
    };
    assert!(decision.limits.contains(&paused));

    let manual = core
        .handle_scale_to(snapshot(nodes_at_cpu(2, 100.0)), 3, secs(1))
        .expect("manual requests ignore the pause");
    assert_eq!(manual.action, Action::ScaleOut { nodes: 1 });
    assert_eq!(manual.trigger, Trigger::ScaleTo);

    assert!(core.maybe_resume());
    assert!(!core.maybe_resume());
}

#[test]
fn scale_to_validates_bounds_and_running_action() {
    let mut core = core(eager_config());
    let out_of_bounds = core
        .handle_scale_to(snapshot(nodes_at_cpu(2, 50.0)), 11, secs(0))
        .unwrap_err();
    assert_eq!(
        out_of_bounds,
        RequestError::OutOfBounds {
            requested: 11,
            min: 1,
            max: 10
        }
    );

    let scale_in = core
        .handle_scale_to(snapshot(nodes_at_cpu(4, 50.0)), 2, secs(0))
        .unwrap();
    assert!(matches!(scale_in.action, Action::ScaleIn { ref nodes } if nodes.len() == 2));
    let busy = core
        .handle_scale_to(snapshot(nodes_at_cpu(4, 50.0)), 3, secs(1))
        .unwrap_err();
    assert_eq!(
        busy,
        RequestError::ActionInProgress {
            decision: scale_in.id
        }
    );
}

#[test]
fn drain_request_checks_node_and_minimum() {
    let mut core = core(ScalingConfig {
        min_nodes: NonZeroU32::new(2).unwrap(),
        ..eager_config()
    });
    let unknown = core
        .handle_drain_request(snapshot(nodes_at_cpu(3, 50.0)), "node-9", secs(0))
        .unwrap_err();
    assert_eq!(
        unknown,
        RequestError::NodeNotActive {
            name: "node-9".into()
        }
    );

    let below = core
        .handle_drain_request(snapshot(nodes_at_cpu(2, 50.0)), "node-1", secs(0))
        .unwrap_err();
    assert!(matches!(
        below,
        RequestError::BelowMinimum {
            remaining: 1,
            min: 2,
            ..
        }
    ));

    let mut forced = snapshot(nodes_at_cpu(3, 50.0));
    forced.forced_removal_order = vec!["node-2".into()];
    let not_allowed = core
        .handle_drain_request(forced.clone(), "node-1", secs(0))
        .unwrap_err();
    assert!(matches!(
        not_allowed,
        RequestError::RemovalNotAllowed { .. }
    ));

    let drained = core
        .handle_drain_request(forced, "node-2", secs(0))
        .unwrap();
    assert_eq!(
        drained.action,
        Action::ScaleIn {
            nodes: vec![incarnation("node-2")]
        }
    );
}

#[test]
fn dry_run_changes_nothing() {
    let core = core(eager_config());
    let decision = core.dry_run(snapshot(nodes_at_cpu(2, 100.0)), secs(0));
    assert_eq!(decision.id, DecisionId::DRY_RUN);
    assert_eq!(decision.trigger, Trigger::DryRun);
    assert_eq!(decision.action, Action::ScaleOut { nodes: 2 });
    assert!(core.history().is_empty());
    assert_eq!(core.status(secs(0)).running_action, None);
}

#[test]
fn decision_keeps_inputs_and_reasons() {
    let mut core = core(ScalingConfig::default());
    let decision = core.handle_evaluation(snapshot(nodes_at_cpu(3, 20.0)), secs(0));
    assert_eq!(decision.id, DecisionId(1));
    assert_eq!(decision.snapshot.nodes.len(), 3);
    assert_eq!(decision.load.active_nodes, 3);
    assert_eq!(
        decision.recommendations.len(),
        4,
        "the four default policies"
    );
    assert!(
        decision
            .recommendations
            .iter()
            .all(|r| !r.reason.is_empty())
    );
    assert!(decision.combined.is_some());
    assert!(!decision.summary.is_empty());
    assert_eq!(core.history().get(DecisionId(1)), Some(&decision));
}

#[test]
fn invalid_config_keeps_running_config() {
    let mut core = core(cpu_config());
    let mut invalid = cpu_config();
    invalid.min_nodes = NonZeroU32::new(20).unwrap();
    assert!(core.set_config(invalid).is_err());
    assert_eq!(core.config(), &cpu_config());

    let mut valid = cpu_config();
    valid.max_nodes = NonZeroU32::new(3).unwrap();
    core.set_config(valid.clone()).unwrap();
    assert_eq!(core.config(), &valid);
}
