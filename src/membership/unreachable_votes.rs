//! Counting the unreachable reports that live members broadcast into verdicts: the members
//! that enough other members cannot reach over the cluster transport.
//!
//! Rules, in the spirit of Orleans, which declares a silo dead after suspicions from
//! `NumVotesForDeathDeclaration` silos (2 by default, as the Orleans cluster management
//! documentation on learn.microsoft.com states):
//! 1. A vote is one live member listing a live member's current incarnation in its latest
//!    meta. A member never votes for itself, and each voter counts once.
//! 2. A member is voted unreachable when at least `required` distinct other members vote for
//!    it. The number is never lowered to fit a small cluster, so a cluster in which fewer than
//!    `required` other members can vote declares no member down this way.
//! 3. A voter that is itself listed by at least `required` members does not vote. A node that
//!    cannot open sessions lists every peer, and its peers list it; without this rule, two
//!    such nodes together could get every healthy node declared down.
//!
//! A node that cannot reach anyone is one vote, so alone it cannot get a healthy node declared
//! down; `required` is at least 2 (see `MembershipConfig::unreachable_votes`).

use std::collections::{BTreeMap, BTreeSet};

use super::Incarnation;

/// One live member's latest report.
#[derive(Clone, Debug)]
pub struct Ballot<'a> {
    /// The member that broadcast the report.
    pub voter: Incarnation,
    /// The peers it lists as unreachable.
    pub unreachable: &'a [Incarnation],
}

/// A member voted unreachable, with the names of the members whose votes counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The incarnation voted unreachable.
    pub member: Incarnation,
    /// Names of the voters, sorted.
    pub voters: Vec<String>,
}

/// Returns the members voted unreachable by `ballots`, ordered by incarnation.
///
/// `is_live` returns whether an incarnation is a live member; votes for or from other
/// incarnations (a restarted or dead member) do not count. `required` of 0 returns nothing.
pub fn count_votes<'a>(
    ballots: impl IntoIterator<Item = Ballot<'a>>,
    is_live: impl Fn(&Incarnation) -> bool,
    required: usize,
) -> Vec<Verdict> {
    if required == 0 {
        return Vec::new();
    }
    let mut votes: BTreeMap<&Incarnation, BTreeSet<Incarnation>> = BTreeMap::new();
    for ballot in ballots {
        if !is_live(&ballot.voter) {
            continue;
        }
        for member in ballot.unreachable {
            if member.name != ballot.voter.name && is_live(member) {
                votes
                    .entry(member)
                    .or_default()
                    .insert(ballot.voter.clone());
            }
        }
    }
    let suspects: BTreeSet<&Incarnation> = votes
        .iter()
        .filter(|(_, voters)| voters.len() >= required)
        .map(|(member, _)| *member)
        .collect();

    votes
        .iter()
        .filter_map(|(member, voters)| {
            let counted: Vec<String> = voters
                .iter()
                .filter(|voter| !suspects.contains(voter))
                .map(|voter| voter.name.clone())
                .collect();
            (counted.len() >= required).then(|| Verdict {
                member: (*member).clone(),
                voters: counted,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn node(name: &str) -> Incarnation {
        Incarnation {
            name: name.into(),
            boot_id: 1,
        }
    }

    /// Counts the reports `(voter, listed names)`, with every name at boot id 1 live unless it
    /// is in `dead`, and returns the verdicts as `(member, voters)` names.
    fn verdicts(
        reports: &[(&str, &[&str])],
        dead: &[&str],
        required: usize,
    ) -> Vec<(String, Vec<String>)> {
        let lists: Vec<(Incarnation, Vec<Incarnation>)> = reports
            .iter()
            .map(|(voter, listed)| (node(voter), listed.iter().map(|name| node(name)).collect()))
            .collect();
        let ballots = lists.iter().map(|(voter, unreachable)| Ballot {
            voter: voter.clone(),
            unreachable,
        });
        let dead: BTreeSet<&str> = dead.iter().copied().collect();
        let is_live =
            |member: &Incarnation| member.boot_id == 1 && !dead.contains(member.name.as_str());
        count_votes(ballots, is_live, required)
            .into_iter()
            .map(|verdict| (verdict.member.name, verdict.voters))
            .collect()
    }

    /// A table row: the case, the reports `(voter, listed)`, the dead names, the votes
    /// required, and the expected verdicts `(member, voters)`.
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a [&'a str])>,
        Vec<&'a str>,
        usize,
        Vec<(&'a str, &'a [&'a str])>,
    );

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn verdicts_follow_the_rules() {
        let cases: Vec<Case> = vec![
            ("no reports", vec![], vec![], 2, vec![]),
            (
                "one vote is not enough",
                vec![("a", &["x"])],
                vec![],
                2,
                vec![],
            ),
            (
                "two votes declare x",
                vec![("a", &["x"]), ("b", &["x"])],
                vec![],
                2,
                vec![("x", &["a", "b"])],
            ),
            (
                "x cut off: it lists everyone, everyone lists x",
                vec![
                    ("a", &["x"]),
                    ("b", &["x"]),
                    ("c", &["x"]),
                    ("x", &["a", "b", "c"]),
                ],
                vec![],
                2,
                vec![("x", &["a", "b", "c"])],
            ),
            (
                "a node that reaches nobody is one vote",
                vec![("x", &["a", "b", "c"])],
                vec![],
                2,
                vec![],
            ),
            (
                "two nodes that reach nobody do not vote out healthy ones",
                vec![
                    ("a", &["x", "y"]),
                    ("b", &["x", "y"]),
                    ("x", &["a", "b", "y"]),
                    ("y", &["a", "b", "x"]),
                ],
                vec![],
                2,
                vec![],
            ),
            (
                "two broken nodes of five: healthy nodes are safe",
                vec![
                    ("a", &["x", "y"]),
                    ("b", &["x", "y"]),
                    ("c", &["x", "y"]),
                    ("x", &["a", "b", "c", "y"]),
                    ("y", &["a", "b", "c", "x"]),
                ],
                vec![],
                2,
                vec![],
            ),
            (
                "one broken link between two nodes",
                vec![("a", &["b"]), ("b", &["a"])],
                vec![],
                2,
                vec![],
            ),
            (
                "a self vote does not count",
                vec![("x", &["x"]), ("a", &["x"])],
                vec![],
                2,
                vec![],
            ),
            (
                "a voter listed twice counts once",
                vec![("a", &["x", "x"])],
                vec![],
                2,
                vec![],
            ),
            (
                "votes of a dead member do not count",
                vec![("a", &["x"]), ("d", &["x"])],
                vec!["d"],
                2,
                vec![],
            ),
            (
                "a dead member is not voted",
                vec![("a", &["d"]), ("b", &["d"])],
                vec!["d"],
                2,
                vec![],
            ),
            (
                "two-node cluster: one other member cannot vote anyone out",
                vec![("a", &["b"]), ("b", &["a"])],
                vec![],
                2,
                vec![],
            ),
            (
                "three votes required",
                vec![("a", &["x"]), ("b", &["x"])],
                vec![],
                3,
                vec![],
            ),
            (
                "zero turns voting off",
                vec![("a", &["x"]), ("b", &["x"]), ("c", &["x"])],
                vec![],
                0,
                vec![],
            ),
        ];

        for (case, reports, dead, required, expected) in cases {
            let expected: Vec<(String, Vec<String>)> = expected
                .into_iter()
                .map(|(member, voters)| (member.to_owned(), names(voters)))
                .collect();
            assert_eq!(verdicts(&reports, &dead, required), expected, "{case}");
        }
    }

    #[test]
    fn votes_for_an_old_incarnation_do_not_count() {
        let old_x = Incarnation {
            name: "x".into(),
            boot_id: 0,
        };
        let listed = [old_x];
        let ballots = [
            Ballot {
                voter: node("a"),
                unreachable: &listed,
            },
            Ballot {
                voter: node("b"),
                unreachable: &listed,
            },
        ];
        let is_live = |member: &Incarnation| member.boot_id == 1;

        assert_eq!(count_votes(ballots, is_live, 2), vec![]);
    }
}
