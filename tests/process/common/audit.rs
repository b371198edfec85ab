//! Reading the turn audits that test nodes write (`--turn-audit`) and checking them for
//! activations of one grain that ran turns at the same time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One turn from a node's turn audit.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Name of the node that ran the turn.
    pub node: String,
    /// Boot id of that node's process.
    pub boot_id: u64,
    /// Id of the activation, unique within one process.
    pub activation_id: u64,
    /// Directory epoch of the activation.
    pub epoch: u64,
    /// Wall-clock start, in nanoseconds since the Unix epoch.
    pub start_ns: u128,
    /// Wall-clock end, in nanoseconds since the Unix epoch.
    pub end_ns: u128,
}

impl Turn {
    /// Returns whether `other` ran on the same activation.
    pub fn same_activation(&self, other: &Turn) -> bool {
        self.node == other.node
            && self.boot_id == other.boot_id
            && self.activation_id == other.activation_id
    }
}

/// Reads every node's turn audit and returns the turns by grain. A missing file counts as a
/// node that ran no turn.
pub fn read_audits(paths: &[&Path]) -> HashMap<String, Vec<Turn>> {
    let mut turns: HashMap<String, Vec<Turn>> = HashMap::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => panic!("read {}: {error}", path.display()),
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 7, "audit line {line:?}");
            let number = |i: usize| {
                fields[i]
                    .parse::<u128>()
                    .unwrap_or_else(|e| panic!("field {i} of {line:?}: {e}"))
            };
            turns.entry(fields[0].to_string()).or_default().push(Turn {
                node: fields[1].to_string(),
                boot_id: number(2) as u64,
                activation_id: number(3) as u64,
                epoch: number(4) as u64,
                start_ns: number(5),
                end_ns: number(6),
            });
        }
    }
    turns
}

/// Returns the pairs of turns of one grain that overlap in time and belong to different
/// activations.
pub fn overlapping_activations(turns: &HashMap<String, Vec<Turn>>) -> Vec<(String, Turn, Turn)> {
    let mut overlaps = Vec::new();
    for (grain, grain_turns) in turns {
        let mut sorted = grain_turns.clone();
        sorted.sort_by_key(|t| t.start_ns);
        let mut latest_end: Option<Turn> = None;
        for turn in sorted {
            if let Some(previous) = &latest_end
                && turn.start_ns < previous.end_ns
                && !previous.same_activation(&turn)
            {
                overlaps.push((grain.clone(), previous.clone(), turn.clone()));
            }
            if latest_end.as_ref().is_none_or(|p| turn.end_ns > p.end_ns) {
                latest_end = Some(turn);
            }
        }
    }
    overlaps
}

/// The move of a grain from one activation to the next one that ran a turn.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The grain.
    pub grain: String,
    /// Last turn of the old activation.
    pub last_old: Turn,
    /// First turn of the new activation.
    pub first_new: Turn,
}

impl Handoff {
    /// Returns the time from the end of the old activation's last turn to the start of the
    /// new activation's first turn, in nanoseconds; negative when they overlap.
    pub fn gap_ns(&self) -> i128 {
        self.first_new.start_ns as i128 - self.last_old.end_ns as i128
    }
}

/// Returns, for every grain, each change from one activation to the next in the order of
/// their first turns.
pub fn handoffs(turns: &HashMap<String, Vec<Turn>>) -> Vec<Handoff> {
    let mut handoffs = Vec::new();
    for (grain, grain_turns) in turns {
        // Turns of each activation: (first turn, last-ending turn).
        let mut activations: BTreeMap<(String, u64, u64), (Turn, Turn)> = BTreeMap::new();
        for turn in grain_turns {
            let key = (turn.node.clone(), turn.boot_id, turn.activation_id);
            let span = activations
                .entry(key)
                .or_insert_with(|| (turn.clone(), turn.clone()));
            if turn.start_ns < span.0.start_ns {
                span.0 = turn.clone();
            }
            if turn.end_ns > span.1.end_ns {
                span.1 = turn.clone();
            }
        }
        let mut spans: Vec<(Turn, Turn)> = activations.into_values().collect();
        spans.sort_by_key(|(first, _)| first.start_ns);
        for pair in spans.windows(2) {
            handoffs.push(Handoff {
                grain: grain.clone(),
                last_old: pair[0].1.clone(),
                first_new: pair[1].0.clone(),
            });
        }
    }
    handoffs
}

/// Counts turns by activation epoch, for reports.
pub fn turns_by_epoch(turns: &HashMap<String, Vec<Turn>>) -> BTreeMap<u64, usize> {
    let mut by_epoch = BTreeMap::new();
    for turn in turns.values().flatten() {
        *by_epoch.entry(turn.epoch).or_default() += 1;
    }
    by_epoch
}

/// Returns the turn audit file of node `name` in `audit_dir`.
pub fn audit_path(audit_dir: &Path, name: &str) -> PathBuf {
    audit_dir.join(format!("{name}.audit"))
}

/// Reads the audits of `nodes` in `audit_dir`, prints a summary, and returns the turns.
pub fn read_cluster_audit(audit_dir: &Path, nodes: &[&str]) -> HashMap<String, Vec<Turn>> {
    let paths: Vec<PathBuf> = nodes.iter().map(|n| audit_path(audit_dir, n)).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let turns = read_audits(&refs);
    let total: usize = turns.values().map(Vec::len).sum();
    eprintln!(
        "audit: {total} turns of {} grains, turns by epoch {:?}",
        turns.len(),
        turns_by_epoch(&turns)
    );
    turns
}

/// Prints the hand-offs between activations that the audit shows, and returns those in which
/// the new activation started a turn before the old one had ended its last.
pub fn early_handoffs(turns: &HashMap<String, Vec<Turn>>) -> Vec<Handoff> {
    let all = handoffs(turns);
    let min_gap = all.iter().map(Handoff::gap_ns).min();
    eprintln!(
        "measured: {} hand-offs between activations, smallest gap {:?} µs",
        all.len(),
        min_gap.map(|gap| gap / 1_000)
    );
    all.into_iter().filter(|h| h.gap_ns() <= 0).collect()
}

/// Asserts that no activation of a grain started a turn before the previous activation had
/// ended its last one, and that no two activations ran turns at the same time.
pub fn assert_one_activation_at_a_time(turns: &HashMap<String, Vec<Turn>>) {
    let early = early_handoffs(turns);
    assert!(
        early.is_empty(),
        "{} new activations started before the old one's last turn ended, first: {:?}",
        early.len(),
        early.first()
    );
    let overlaps = overlapping_activations(turns);
    assert!(
        overlaps.is_empty(),
        "{} overlapping turns of different activations, first: {:?}",
        overlaps.len(),
        overlaps.first()
    );
}
