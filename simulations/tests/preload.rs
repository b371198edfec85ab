//! Preloaded nodes start as members of a formed cluster: every view lists every node as
//! Active with the meta it broadcast, and starting them sends no flood of broadcasts.

use std::time::Duration;

use gristmill::membership::NodeState;
use gristmill_simulations::{SimConfig, World};

const NODES: usize = 40;

fn preloaded_world() -> World {
    let mut config = SimConfig::new(5);
    config.node.membership_only = true;
    let mut world = World::new(config);
    world.add_preloaded_nodes(NODES);
    world
}

#[test]
fn preloaded_views_list_every_node_active() {
    let world = preloaded_world();

    for slot in world.slots() {
        let node = slot.node.as_ref().expect("every preloaded node runs");
        let members: Vec<_> = node.view().members().collect();
        assert_eq!(members.len(), NODES, "view of {}", slot.name);
        for member in members {
            assert_eq!(
                member.state,
                NodeState::Active,
                "{} in the view of {}",
                member.id.name,
                slot.name
            );
            assert_eq!(
                member.meta_version, 1,
                "{} in the view of {}",
                member.id.name, slot.name
            );
        }
    }
}

#[test]
fn preloaded_nodes_start_without_broadcast_flood() {
    let mut world = preloaded_world();

    let (updates, meta) = world.largest_backlogs();
    assert_eq!(updates, 0, "member updates in one node's backlog");
    assert_eq!(meta, 0, "meta items in one node's backlog");

    world.run_for(Duration::from_secs(2));

    assert!(world.views_agree());
    let (updates, meta) = world.largest_backlogs();
    assert_eq!(updates, 0, "member updates in one node's backlog after 2 s");
    assert!(
        meta <= 5,
        "{meta} meta items in one node's backlog after 2 s"
    );
    assert_eq!(world.stats().false_downs, 0);
}
