//! Membership of 50 simulated nodes: all views agree, a crash is detected and agreed on.
//!
//! 50 nodes keep the debug-build test within seconds (200 took minutes); the CLI runs 1,000 and more:
//! `cargo run --release -p gristmill-simulations -- scale --nodes 1000`.

use std::time::Duration;

use gristmill_simulations::scale::run_membership;

#[test]
fn fifty_nodes_converge_and_detect_crash() {
    let report = run_membership(50, 1);

    assert!(
        report.joined_after.is_some(),
        "views never agreed: {report:?}"
    );
    let detected = report.detected_after.expect("crash never detected");
    assert!(detected < Duration::from_secs(30), "{report:?}");
    assert!(
        report.agreed_after.is_some(),
        "views never agreed after the crash: {report:?}"
    );
}
