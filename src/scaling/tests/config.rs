//! Config validation, defaults and the TOML form.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use crate::scaling::behavior::{RatePolicy, SelectPolicy};
use crate::scaling::combiner::CombinerKind;
use crate::scaling::config::{
    ConfigError, MailboxMeasure, PolicyTarget, ScalingConfig, ScalingPolicyConfig,
};
use crate::scaling::policy::PolicyKind;

use super::cpu_config;

#[test]
fn defaults_and_local_demo_are_valid() {
    ScalingConfig::default().validate().unwrap();
    let demo = ScalingConfig::for_local_demo();
    demo.validate().unwrap();
    assert!(
        demo.scale_in.stabilization_window < ScalingConfig::default().scale_in.stabilization_window
    );
    assert!(demo.evaluation_interval <= Duration::from_secs(1));
}

#[test]
fn defaults_follow_documented_values() {
    let config = ScalingConfig::default();
    assert_eq!(config.tolerance, 0.1);
    assert_eq!(
        config.scale_out.stabilization_window,
        Duration::from_secs(30)
    );
    assert_eq!(
        config.scale_in.stabilization_window,
        Duration::from_secs(300)
    );
    assert_eq!(config.history_capacity.get(), 1_000);
    assert_eq!(config.combiner, CombinerKind::MostAggressive);
}

#[test]
fn validate_names_invalid_field() {
    let policy = |target| ScalingConfig {
        policies: vec![ScalingPolicyConfig::new(target)],
        ..ScalingConfig::default()
    };
    let with_weight = |weight: f64, combiner| {
        let mut config = cpu_config();
        config.policies[0].weight = weight;
        config.combiner = combiner;
        config
    };
    let cases: Vec<(ScalingConfig, &str)> = vec![
        (
            ScalingConfig {
                min_nodes: NonZeroU32::new(5).unwrap(),
                max_nodes: NonZeroU32::new(4).unwrap(),
                ..ScalingConfig::default()
            },
            "min_nodes",
        ),
        (
            ScalingConfig {
                tolerance: 1.0,
                ..ScalingConfig::default()
            },
            "tolerance",
        ),
        (
            ScalingConfig {
                tolerance: -0.1,
                ..ScalingConfig::default()
            },
            "tolerance",
        ),
        (
            policy(PolicyTarget::Cpu {
                percent_per_node: 0.0,
            }),
            "policies[0].percent_per_node",
        ),
        (
            policy(PolicyTarget::GrainDensity {
                activations_per_node: -5.0,
            }),
            "policies[0].activations_per_node",
        ),
        (
            policy(PolicyTarget::CallRate {
                calls_per_sec_per_node: f64::NAN,
            }),
            "policies[0].calls_per_sec_per_node",
        ),
        (
            policy(PolicyTarget::MailboxDepth {
                depth: 0.0,
                measure: MailboxMeasure::Max,
            }),
            "policies[0].depth",
        ),
        (
            policy(PolicyTarget::Memory {
                bytes_per_node: None,
                percent_per_node: Some(80.0),
            }),
            "policies[0].percent_per_node",
        ),
        (
            policy(PolicyTarget::Memory {
                bytes_per_node: Some(1),
                percent_per_node: Some(1.0),
            }),
            "policies[0].bytes_per_node",
        ),
        (
            policy(PolicyTarget::ClusterHealth {
                min_score: 1.5,
                max_unhealthy_nodes: 0,
            }),
            "policies[0].min_score",
        ),
        (
            with_weight(-1.0, CombinerKind::MostAggressive),
            "policies[0].weight",
        ),
        (
            with_weight(0.0, CombinerKind::WeightedAverage),
            "policies[*].weight",
        ),
        (
            ScalingConfig {
                policies: Vec::new(),
                ..ScalingConfig::default()
            },
            "policies",
        ),
        (
            ScalingConfig {
                evaluation_interval: Duration::ZERO,
                ..ScalingConfig::default()
            },
            "evaluation_interval",
        ),
        (
            ScalingConfig {
                evaluation_interval: Duration::from_millis(1),
                ..ScalingConfig::default()
            },
            "evaluation_interval",
        ),
    ];
    for (config, field) in cases {
        let error = config.validate().expect_err(field);
        assert_eq!(error.field(), field, "{error}");
        assert!(
            error.to_string().contains(field),
            "message names the field: {error}"
        );
    }
}

#[test]
fn validate_rejects_duplicate_policy_and_zero_period() {
    let mut config = cpu_config();
    config.policies.push(config.policies[0].clone());
    let error = config.validate().unwrap_err();
    assert_eq!(
        error,
        ConfigError::DuplicatePolicy {
            field: "policies[1].policy".into(),
            kind: PolicyKind::Cpu
        }
    );

    let mut config = cpu_config();
    config.scale_in.policies[0].set_period(Duration::ZERO);
    assert_eq!(
        config.validate().unwrap_err().field(),
        "scale_in.policies[0].period"
    );
}

#[test]
fn zero_weight_is_fine_outside_weighted_average() {
    let mut config = cpu_config();
    config.policies[0].weight = 0.0;
    config.validate().unwrap();
}

#[test]
fn config_reads_from_toml() {
    let text = r#"
        min_nodes = 2
        max_nodes = 8
        evaluation_interval = "5s"
        cooldown = "2m"
        combiner = "consensus"
        consensus_min_agree = 2

        [[policies]]
        policy = "cpu"
        percent_per_node = 70
        priority = 5

        [[policies]]
        policy = "memory"
        percent_per_node = 80.0
        weight = 2.5
        tolerance = 0.2

        [[policies]]
        policy = "mailbox_depth"
        depth = 50
        measure = "total_per_node"
        enabled = false

        [health]
        memory_bytes = 1073741824

        [scale_in]
        stabilization_window = "10m"
        select_policy = "min"
        policies = [
            { type = "nodes", value = 1, period = "1m" },
            { type = "percent", value = 10, period = "5m" },
        ]
    "#;
    let config: ScalingConfig = toml::from_str(text).expect("valid TOML config");
    config.validate().unwrap();
    assert_eq!(config.min_nodes.get(), 2);
    assert_eq!(config.cooldown, Duration::from_secs(120));
    assert_eq!(config.combiner, CombinerKind::Consensus);
    assert_eq!(config.policies.len(), 3);
    assert_eq!(config.policies[0].effective_priority(), 5);
    assert_eq!(
        config.policies[1].effective_priority(),
        PolicyKind::Memory.default_priority()
    );
    assert_eq!(config.policies[1].weight, 2.5);
    assert!(!config.policies[2].enabled);
    assert_eq!(config.enabled_policies().count(), 2);
    assert_eq!(config.health.memory_bytes, NonZeroU64::new(1 << 30));
    assert_eq!(config.scale_in.select_policy, SelectPolicy::Min);
    assert_eq!(
        config.scale_in.policies[1],
        RatePolicy::Percent {
            value: NonZeroU32::new(10).unwrap(),
            period: Duration::from_secs(300)
        }
    );
    assert_eq!(
        config.scale_out,
        ScalingConfig::default().scale_out,
        "unset tables keep defaults"
    );
}

#[test]
fn toml_rejects_unknown_names() {
    let policy = toml::from_str::<ScalingConfig>("[[policies]]\npolicy = \"disk\"\n");
    let error = policy.unwrap_err().to_string();
    assert!(
        error.contains("disk") && error.contains("grain_density"),
        "{error}"
    );

    let combiner = toml::from_str::<ScalingConfig>("combiner = \"fastest\"\n");
    let error = combiner.unwrap_err().to_string();
    assert!(
        error.contains("fastest") && error.contains("weighted_average"),
        "{error}"
    );
}
