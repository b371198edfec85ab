//! Rendezvous hashing that maps each grain to the member owning its directory partition.
//!
//! # The rule
//!
//! Every node, and any client in another language, must compute the same owner from the same
//! member list, so the rule is fixed byte for byte:
//!
//! 1. `g` is the grain's [`GrainId::stable_hash`]: XXH3-64 (seed 0) over the UTF-8 grain type
//!    name, one zero byte, and the UTF-8 key.
//! 2. For each member, the score is XXH3-64 (seed 0) over these bytes, concatenated:
//!    `g` as 8 bytes little-endian, the member's UTF-8 name, one zero byte, and the member's boot
//!    id as 8 bytes little-endian.
//! 3. The owner is the member with the highest score, compared as unsigned 64-bit integers.
//!    Equal scores go to the member that sorts first by name (bytewise), then by boot id.
//!
//! Removing a member moves only the grains that member owned, because every other member's
//! score for a grain is unchanged. Adding a member takes over only the grains for which the new
//! member scores highest.

use xxhash_rust::xxh3::xxh3_64;

use crate::grain::GrainId;
use crate::membership::Incarnation;

/// Returns the member that owns `grain`'s directory partition, or `None` if `members` is empty.
///
/// The order of `members` does not matter, and duplicates are harmless.
pub fn partition_owner<'a>(grain: &GrainId, members: &'a [Incarnation]) -> Option<&'a Incarnation> {
    rendezvous_max(grain.stable_hash(), members, |member| member)
}

/// Returns the item whose incarnation has the highest rendezvous score for `grain_hash`.
///
/// This is the rule of [`partition_owner`] over any list that carries incarnations, such as
/// placement candidates.
pub fn rendezvous_max<'a, T>(
    grain_hash: u64,
    items: impl IntoIterator<Item = &'a T>,
    incarnation: impl Fn(&T) -> &Incarnation,
) -> Option<&'a T> {
    items
        .into_iter()
        .map(|item| (rendezvous_score(grain_hash, incarnation(item)), item))
        .max_by(|(score_a, a), (score_b, b)| {
            // On equal scores the item that sorts first must compare as the greater one.
            score_a
                .cmp(score_b)
                .then_with(|| incarnation(b).cmp(incarnation(a)))
        })
        .map(|(_, item)| item)
}

/// Returns the rendezvous score of `member` for the grain whose stable hash is `grain_hash`.
pub fn rendezvous_score(grain_hash: u64, member: &Incarnation) -> u64 {
    let mut bytes = Vec::with_capacity(8 + member.name.len() + 1 + 8);
    bytes.extend_from_slice(&grain_hash.to_le_bytes());
    bytes.extend_from_slice(member.name.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&member.boot_id.to_le_bytes());
    xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::directory::tests::incarnation as member;

    fn five_members() -> Vec<Incarnation> {
        (1..=5).map(|n| member(&format!("node-{n}"), n)).collect()
    }

    #[test]
    fn rendezvous_score_is_fixed_across_releases() {
        // A change to these values moves directory partitions. The expected values were
        // computed with Python's `xxhash` package from the rule in the module documentation.
        let cases = [
            (0_u64, member("node-1", 1), 0xe27e_61b7_e332_1c14_u64),
            (
                0xf259_3cd1_926f_8b5f,
                member("node-1", 1),
                0x0d3e_af0e_9048_44c7,
            ),
            (
                0xf259_3cd1_926f_8b5f,
                member("node-2", 0xdead_beef),
                0x80b7_828e_4f61_63f4,
            ),
        ];
        for (grain_hash, member, expected) in cases {
            assert_eq!(
                rendezvous_score(grain_hash, &member),
                expected,
                "score of {member} for grain hash {grain_hash:#x}"
            );
        }
    }

    #[test]
    fn partition_owner_of_empty_list_is_none() {
        assert_eq!(partition_owner(&GrainId::new("counter", "c1"), &[]), None);
    }

    #[test]
    fn partition_owner_ignores_member_order() {
        let members = five_members();
        let mut reversed = members.clone();
        reversed.reverse();
        for key in 0..200 {
            let grain = GrainId::new("counter", format!("c{key}"));
            assert_eq!(
                partition_owner(&grain, &members),
                partition_owner(&grain, &reversed),
                "owner of {grain}"
            );
        }
    }

    #[test]
    fn restarted_member_is_a_different_owner() {
        // Same name, new boot id: the scores change, so ownership reshuffles for that member.
        let grains: Vec<GrainId> = (0..200)
            .map(|key| GrainId::new("counter", format!("c{key}")))
            .collect();
        let before = [member("node-1", 1), member("node-2", 2)];
        let after = [member("node-1", 1), member("node-2", 3)];
        let moved = grains
            .iter()
            .filter(|grain| {
                partition_owner(grain, &before).map(|m| &m.name)
                    != partition_owner(grain, &after).map(|m| &m.name)
            })
            .count();
        assert!(moved > 0, "a new boot id must change some owners");
    }

    #[test]
    fn spread_over_five_members_is_roughly_even() {
        let members = five_members();
        let grains = 10_000;
        let mut owned: HashMap<&Incarnation, usize> = HashMap::new();
        for key in 0..grains {
            let grain = GrainId::new("counter", format!("c{key}"));
            let owner = partition_owner(&grain, &members).expect("members are not empty");
            *owned.entry(owner).or_default() += 1;
        }
        // The expected share is 2000; a binomial deviation of ±10% is over 5 sigma.
        for member in &members {
            let count = owned.get(member).copied().unwrap_or(0);
            assert!(
                (1800..=2200).contains(&count),
                "{member} owns {count} of {grains} grains"
            );
        }
    }

    proptest! {
        #[test]
        fn removing_member_moves_only_its_grains(
            member_count in 2_usize..8,
            removed in 0_usize..8,
            keys in proptest::collection::vec(any::<u32>(), 1..64),
        ) {
            let members: Vec<Incarnation> = (0..member_count)
                .map(|n| member(&format!("node-{n}"), n as u64 * 7 + 1))
                .collect();
            let removed = &members[removed % member_count];
            let remaining: Vec<Incarnation> =
                members.iter().filter(|m| *m != removed).cloned().collect();
            for key in keys {
                let grain = GrainId::new("counter", key.to_string());
                let before = partition_owner(&grain, &members).expect("members are not empty");
                let after = partition_owner(&grain, &remaining).expect("members are not empty");
                if before != removed {
                    prop_assert_eq!(before, after, "grain {} moved off a surviving member", grain);
                }
            }
        }
    }
}
