//! Each policy's recommendation, as tables of load and expected node count.

use std::num::NonZeroU64;

use crate::membership::{NodeLoad, NodeState};
use crate::scaling::config::{MailboxMeasure, PolicyTarget, ScalingPolicyConfig};
use crate::scaling::load::{ClusterLoad, ClusterSnapshot, HealthLimits, NodeSnapshot};
use crate::scaling::policy::{PolicyKind, recommend};

use super::{incarnation, snapshot};

/// Returns the load of `count` Active nodes that all carry `load`.
fn uniform(count: usize, load: NodeLoad) -> ClusterSnapshot {
    let nodes = (0..count)
        .map(|index| NodeSnapshot {
            incarnation: incarnation(&format!("node-{index}")),
            state: NodeState::Active,
            load,
        })
        .collect();
    snapshot(nodes)
}

fn desired(
    target: PolicyTarget,
    cluster: &ClusterSnapshot,
    health: &HealthLimits,
) -> (u32, String) {
    let load = ClusterLoad::from_snapshot(cluster, health);
    let recommendation = recommend(&ScalingPolicyConfig::new(target), &load, health, 0.1);
    (recommendation.desired_nodes, recommendation.reason)
}

#[test]
fn proportional_policies_follow_hpa_formula() {
    let health = HealthLimits {
        memory_bytes: NonZeroU64::new(1_000),
        ..HealthLimits::default()
    };
    let activations = |n| NodeLoad {
        activations: n,
        ..NodeLoad::default()
    };
    let calls = |c| NodeLoad {
        calls_per_sec: c,
        ..NodeLoad::default()
    };
    let cpu = |p| NodeLoad {
        cpu_percent: p,
        ..NodeLoad::default()
    };
    let memory = |b| NodeLoad {
        memory_bytes: b,
        ..NodeLoad::default()
    };
    let density = PolicyTarget::GrainDensity {
        activations_per_node: 100.0,
    };
    let call_rate = PolicyTarget::CallRate {
        calls_per_sec_per_node: 50.0,
    };
    let cpu_target = PolicyTarget::Cpu {
        percent_per_node: 70.0,
    };
    let memory_bytes = PolicyTarget::Memory {
        bytes_per_node: Some(500),
        percent_per_node: None,
    };
    let memory_percent = PolicyTarget::Memory {
        bytes_per_node: None,
        percent_per_node: Some(50.0),
    };
    // (policy, nodes, per-node load, expected desired nodes)
    let cases = [
        (density.clone(), 3, activations(200), 6),
        (density.clone(), 3, activations(105), 3), // ratio 1.05 is within tolerance
        (density.clone(), 3, activations(111), 4), // ceil(3 * 1.11) = 4
        (density.clone(), 4, activations(20), 1),
        (density, 4, activations(0), 0),
        (call_rate.clone(), 2, calls(150.0), 6),
        (call_rate, 10, calls(10.0), 2),
        (cpu_target.clone(), 3, cpu(84.0), 4), // 3 * 1.2 is exactly 3.6, so 4
        (cpu_target.clone(), 5, cpu(35.0), 3),
        (cpu_target, 5, cpu(75.0), 5),
        (memory_bytes.clone(), 2, memory(1_000), 4),
        (memory_bytes, 4, memory(100), 1),
        (memory_percent.clone(), 2, memory(750), 3),
        (memory_percent, 4, memory(250), 2),
    ];
    for (target, count, load, expected) in cases {
        let label = format!("{target} with {count} nodes at {load:?}");
        let (desired, reason) = desired(target, &uniform(count, load), &health);
        assert_eq!(desired, expected, "{label}: {reason}");
        assert!(!reason.is_empty(), "{label}: reason is empty");
    }
}

#[test]
fn mailbox_depth_policy_only_scales_out() {
    let health = HealthLimits::default();
    let queued = |max, total| NodeLoad {
        mailbox_depth_max: max,
        mailbox_depth_total: total,
        ..NodeLoad::default()
    };
    let max = PolicyTarget::MailboxDepth {
        depth: 100.0,
        measure: MailboxMeasure::Max,
    };
    let per_node = PolicyTarget::MailboxDepth {
        depth: 100.0,
        measure: MailboxMeasure::TotalPerNode,
    };
    // (policy, nodes, per-node load, expected desired nodes)
    let cases = [
        (max.clone(), 2, queued(300, 300), 6),
        (max.clone(), 2, queued(105, 105), 2),
        (max.clone(), 4, queued(0, 0), 4),
        (max, 4, queued(10, 10), 4),
        (per_node.clone(), 2, queued(50, 200), 4),
        (per_node, 3, queued(50, 20), 3),
    ];
    for (target, count, load, expected) in cases {
        let label = format!("{target} with {count} nodes at {load:?}");
        let (desired, reason) = desired(target, &uniform(count, load), &health);
        assert_eq!(desired, expected, "{label}: {reason}");
    }
}

#[test]
fn cluster_health_policy_adds_node_per_unhealthy_node() {
    let health = HealthLimits::default();
    let busy = NodeLoad {
        cpu_percent: 95.0,
        ..NodeLoad::default()
    };
    let idle = NodeLoad::default();
    let mixed = |busy_count: usize, idle_count: usize| {
        let mut nodes = uniform(busy_count, busy).nodes;
        for (index, mut node) in uniform(idle_count, idle).nodes.into_iter().enumerate() {
            node.incarnation = incarnation(&format!("idle-{index}"));
            nodes.push(node);
        }
        snapshot(nodes)
    };
    let strict = PolicyTarget::ClusterHealth {
        min_score: 0.3,
        max_unhealthy_nodes: 0,
    };
    let lenient = PolicyTarget::ClusterHealth {
        min_score: 0.3,
        max_unhealthy_nodes: 2,
    };
    // (policy, busy nodes, idle nodes, expected desired nodes)
    let cases = [
        (strict.clone(), 0, 4, 4),
        (strict.clone(), 1, 3, 5),
        (strict.clone(), 3, 1, 7), // score 0.2875 < 0.3 and 3 unhealthy
        (lenient.clone(), 2, 2, 4),
        (lenient.clone(), 4, 0, 8), // score 0.05 is below min_score
        (lenient, 3, 7, 13),
    ];
    for (target, busy_count, idle_count, expected) in cases {
        let label = format!("{target} with {busy_count} busy and {idle_count} idle nodes");
        let (desired, reason) = desired(target, &mixed(busy_count, idle_count), &health);
        assert_eq!(desired, expected, "{label}: {reason}");
    }
}

#[test]
fn policy_tolerance_override_applies() {
    let health = HealthLimits::default();
    let load = ClusterLoad::from_snapshot(
        &uniform(
            4,
            NodeLoad {
                cpu_percent: 60.0,
                ..NodeLoad::default()
            },
        ),
        &health,
    );
    let mut policy = ScalingPolicyConfig::new(PolicyTarget::Cpu {
        percent_per_node: 50.0,
    });
    let strict = recommend(&policy, &load, &health, 0.1);
    policy.tolerance = Some(0.25);
    let loose = recommend(&policy, &load, &health, 0.1);

    assert_eq!(strict.desired_nodes, 5);
    assert!(!strict.within_tolerance);
    assert_eq!(loose.desired_nodes, 4);
    assert!(loose.within_tolerance);
    assert_eq!(loose.tolerance, 0.25);
}

#[test]
fn policy_kind_parses_names() {
    for kind in PolicyKind::ALL {
        assert_eq!(kind.as_str().parse::<PolicyKind>(), Ok(kind));
    }
    let error = "cpus".parse::<PolicyKind>().unwrap_err().to_string();
    assert!(error.contains("unknown policy `cpus`"), "{error}");
    assert!(
        error.contains("grain_density, call_rate, mailbox_depth, cpu, memory, cluster_health"),
        "{error}"
    );
}
