//! StatefulSet pod names: `<statefulset>-<ordinal>`, and which pod a scale-in removes.

/// Splits a pod name into its StatefulSet name and ordinal, such as `gristmill-2` into
/// `("gristmill", 2)`.
///
/// Returns `None` for names without a numeric suffix and for suffixes with a leading zero,
/// which a StatefulSet never generates, so each ordinal has exactly one spelling.
pub(super) fn split_pod_name(pod_name: &str) -> Option<(&str, u32)> {
    let (statefulset, suffix) = pod_name.rsplit_once('-')?;
    let canonical = suffix == "0" || !suffix.starts_with('0');
    if statefulset.is_empty() || !canonical || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((statefulset, suffix.parse().ok()?))
}

/// Returns the name of pod `ordinal` of `statefulset`.
pub(super) fn pod_name(statefulset: &str, ordinal: u32) -> String {
    format!("{statefulset}-{ordinal}")
}

/// Returns the ordinal of `pod_name` if the pod belongs to `statefulset`.
pub(super) fn ordinal_in(statefulset: &str, pod_name: &str) -> Option<u32> {
    match split_pod_name(pod_name) {
        Some((owner, ordinal)) if owner == statefulset => Some(ordinal),
        _ => None,
    }
}

/// Returns the node among `nodes` with the highest ordinal of `statefulset`, the pod that the
/// StatefulSet controller deletes first when its size shrinks. Names of other StatefulSets
/// and names without an ordinal are ignored.
pub(super) fn highest_ordinal<'a>(statefulset: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .filter_map(|name| Some((ordinal_in(statefulset, name)?, name.as_str())))
        .max_by_key(|(ordinal, _)| *ordinal)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pod_name_accepts_only_canonical_ordinals() {
        let cases = [
            ("gristmill-0", Some(("gristmill", 0))),
            ("gristmill-10", Some(("gristmill", 10))),
            ("a-b-7", Some(("a-b", 7))),
            ("gristmill-07", None),
            ("gristmill-x", None),
            ("gristmill-+1", None),
            ("gristmill-", None),
            ("-1", None),
            ("gristmill", None),
            ("gristmill-99999999999", None),
        ];
        for (name, expected) in cases {
            assert_eq!(split_pod_name(name), expected, "pod name {name:?}");
        }
    }

    #[test]
    fn pod_name_round_trips() {
        for ordinal in [0, 1, 9, 10, 4_000_000_000] {
            let name = pod_name("gristmill", ordinal);
            assert_eq!(split_pod_name(&name), Some(("gristmill", ordinal)));
        }
    }

    #[test]
    fn highest_ordinal_compares_numbers_not_text() {
        let nodes: Vec<String> = ["gristmill-9", "gristmill-10", "gristmill-2"]
            .map(String::from)
            .into();
        assert_eq!(highest_ordinal("gristmill", &nodes), Some("gristmill-10"));
    }

    #[test]
    fn highest_ordinal_ignores_foreign_names() {
        let nodes: Vec<String> = ["other-7", "node-3", "gristmill-1", "gristmill"]
            .map(String::from)
            .into();
        assert_eq!(highest_ordinal("gristmill", &nodes), Some("gristmill-1"));
        assert_eq!(highest_ordinal("absent", &nodes), None);
        assert_eq!(highest_ordinal("gristmill", &[]), None);
    }
}
