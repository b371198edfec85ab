//! KEDA's external scaler interface on a real node: the four RPCs over loopback through a
//! client generated from the same proto, the activity stream, and rejected trigger metadata.
//!
//! ractor keeps process-global registries, so this binary starts exactly one node and runs
//! every check against it in one test.

use std::collections::HashMap;
use std::time::Duration;

use gristmill::api::keda_pb::external_scaler_client::ExternalScalerClient;
use gristmill::api::keda_pb::{GetMetricsRequest, ScaledObjectRef};
use gristmill::api::pb;
use gristmill::api::pb::scaling_client::ScalingClient;
use gristmill::grain::samples::{self, Add, Counter};
use gristmill::membership::NodeState;
use gristmill::runtime::{Node, NodeConfig};
use gristmill::scaling::keda::KedaConfig;
use tokio::time::Instant;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(data: &tempfile::TempDir) -> NodeConfig {
    let storage = gristmill::storage::StorageConfig {
        sqlite_path: data.path().join("state.sqlite3"),
        ..Default::default()
    };
    let mut config = NodeConfig {
        storage,
        node_name: "keda-0".into(),
        cookie: "keda-scaler-test-cookie".into(),
        keda: KedaConfig {
            active_check_interval_ms: 100,
            // Longer than the test, so every message after the first is a change.
            active_resend_interval_ms: 600_000,
        },
        ..NodeConfig::default()
    };
    config.scaling.evaluation_interval = Duration::from_secs(1);
    config
}

fn scaled_object(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    let mut scaler_metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    // KEDA passes its own keys along with the trigger's; the scaler must accept them.
    scaler_metadata.insert("scalerAddress".into(), "gristmill.gristmill:7948".into());
    ScaledObjectRef {
        name: "gristmill".into(),
        namespace: "gristmill".into(),
        scaler_metadata,
    }
}

async fn metric(
    client: &mut ExternalScalerClient<Channel>,
    metadata: &[(&str, &str)],
    metric_name: &str,
) -> Result<i64, tonic::Status> {
    let response = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_object(metadata)),
            metric_name: metric_name.into(),
        })
        .await?
        .into_inner();
    assert_eq!(response.metric_values.len(), 1, "{response:?}");
    let value = &response.metric_values[0];
    assert_eq!(value.metric_name, metric_name);
    assert_eq!(value.metric_value as f64, value.metric_value_float);
    Ok(value.metric_value)
}

/// Returns the dry run's target count and combined recommendation from the Scaling API.
async fn evaluate(scaling: &mut ScalingClient<Channel>) -> (i64, i64) {
    let decision = scaling
        .evaluate(pb::EvaluateRequest {})
        .await
        .expect("Evaluate")
        .into_inner()
        .decision
        .expect("Evaluate returns a decision");
    let combined = decision.combined.expect("a dry run has a combined result");
    (
        i64::from(decision.target_nodes),
        i64::from(combined.desired_nodes),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_scaler_serves_supervisor_counts() {
    // Goal: KEDA's four RPCs answer with the acting supervisor's counts and activity, the
    // stream reports a change, and bad trigger metadata is rejected with the key named.
    // Method: one node with orchestrator = none (KEDA's mode); a grain call adds load and a
    // SetPolicy call raises min_nodes, and each answer is compared with Scaling.Evaluate.
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(config(&data), samples::registry())
        .await
        .expect("node starts");
    let mut state = node.watch_state();
    tokio::time::timeout(DEADLINE, state.wait_for(|s| *s == NodeState::Active))
        .await
        .expect("node became Active")
        .expect("state channel open");
    let address = format!("http://{}", node.grpc_addr());
    let mut keda = ExternalScalerClient::connect(address.clone())
        .await
        .expect("connect");
    let mut scaling = ScalingClient::connect(address).await.expect("connect");

    // GetMetricSpec needs no supervisor: one metric, one node per replica.
    let spec = keda
        .get_metric_spec(scaled_object(&[]))
        .await
        .expect("GetMetricSpec")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1, "{spec:?}");
    assert_eq!(spec.metric_specs[0].metric_name, "gristmill_desired_nodes");
    assert_eq!(spec.metric_specs[0].target_size, 1);
    assert_eq!(spec.metric_specs[0].target_size_float, 1.0);
    let spec = keda
        .get_metric_spec(scaled_object(&[("metric", "recommended_nodes")]))
        .await
        .expect("GetMetricSpec")
        .into_inner();
    assert_eq!(
        spec.metric_specs[0].metric_name,
        "gristmill_recommended_nodes"
    );

    // IsActive returns a result once the node's supervisor has taken over.
    let started = Instant::now();
    let idle_active = loop {
        match keda.is_active(scaled_object(&[])).await {
            Ok(response) => break response.into_inner().result,
            Err(status) => assert!(
                started.elapsed() < DEADLINE,
                "IsActive kept failing: {status}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "supervisor answered after {} ms",
        started.elapsed().as_millis()
    );
    assert!(!idle_active, "an idle node at min_nodes 1 is not active");
    let (target, recommended) = evaluate(&mut scaling).await;
    let desired = metric(&mut keda, &[], "gristmill_desired_nodes")
        .await
        .expect("GetMetrics");
    assert_eq!(desired, target, "desired_nodes is the dry run's target");
    assert_eq!(desired, 1);
    let metadata = [("metric", "recommended_nodes")];
    let value = metric(&mut keda, &metadata, "gristmill_recommended_nodes")
        .await
        .expect("GetMetrics");
    assert_eq!(
        value, recommended,
        "recommended_nodes is the combined count"
    );

    // StreamIsActive sends the current activity at once and the change after a grain call.
    let mut stream = keda
        .stream_is_active(scaled_object(&[]))
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = stream.message().await.expect("stream open").expect("first");
    assert!(
        !first.result,
        "the stream starts with the idle node's activity"
    );
    let counter = node.grain::<Counter>("keda");
    assert_eq!(counter.call(Add { amount: 1 }).await, Ok(1));
    let called = Instant::now();
    let changed = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("the stream reports the change before the deadline")
        .expect("stream open")
        .expect("a second message");
    assert!(changed.result, "an activation makes the cluster active");
    println!(
        "stream reported activity {} ms after the call",
        called.elapsed().as_millis()
    );
    let active = keda.is_active(scaled_object(&[])).await.expect("IsActive");
    assert!(active.into_inner().result);

    // The metric follows the supervisor's policy: min_nodes 3 makes the target 3.
    let mut policy = scaling
        .get_status(pb::GetScalingStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner()
        .policy
        .expect("status has a policy");
    policy.min_nodes = 3;
    scaling
        .set_policy(pb::SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .expect("SetPolicy");
    let desired = metric(&mut keda, &[], "gristmill_desired_nodes")
        .await
        .expect("GetMetrics");
    let (target, _) = evaluate(&mut scaling).await;
    assert_eq!(desired, 3, "one Active node below min_nodes 3 wants 3");
    assert_eq!(desired, target);

    // Bad metadata: INVALID_ARGUMENT naming the key, the value and the accepted values.
    let unknown = keda
        .is_active(scaled_object(&[("grainType", "counter")]))
        .await
        .expect_err("unknown key");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().contains("\"grainType\""), "{unknown:?}");
    let bad_value = keda
        .get_metric_spec(scaled_object(&[("metric", "cpu")]))
        .await
        .expect_err("bad metric");
    assert_eq!(bad_value.code(), tonic::Code::InvalidArgument);
    for expected in ["\"cpu\"", "desired_nodes", "recommended_nodes"] {
        assert!(bad_value.message().contains(expected), "{bad_value:?}");
    }
    let stream_rejected = keda
        .stream_is_active(scaled_object(&[("metric", "")]))
        .await
        .expect_err("bad metadata on the stream");
    assert_eq!(stream_rejected.code(), tonic::Code::InvalidArgument);
    let mismatch = metric(&mut keda, &[], "gristmill_recommended_nodes")
        .await
        .expect_err("metric name the trigger does not select");
    assert_eq!(mismatch.code(), tonic::Code::InvalidArgument);
    assert!(
        mismatch.message().contains("gristmill_desired_nodes"),
        "{mismatch:?}"
    );
    let no_ref = keda
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: None,
            metric_name: "gristmill_desired_nodes".into(),
        })
        .await
        .expect_err("missing scaledObjectRef");
    assert_eq!(no_ref.code(), tonic::Code::InvalidArgument);

    // StreamMetricSpec is optional in KEDA, which falls back on UNIMPLEMENTED.
    let unimplemented = keda
        .stream_metric_spec(scaled_object(&[]))
        .await
        .expect_err("StreamMetricSpec");
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);

    node.drain_and_leave().await;
}
