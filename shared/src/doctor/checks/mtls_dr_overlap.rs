//! `mtls.dr-overlap`: two DestinationRules for the same host (and subset) seen by one namespace.

use std::collections::{BTreeSet, HashMap};

use super::{list, or_pass};
use crate::doctor::mesh::{Export, Rule};
use crate::doctor::{Check, CheckContext, Finding};
use crate::snapshot::Snapshot;

/// Warns for each rule that shares its host with another rule visible to the same namespace,
/// when one has no subsets or they share a subset name: Pilot keeps only one rule's traffic
/// policy (the oldest), so which TLS applies is easy to get wrong.
pub struct MtlsDrOverlap;

const ID: &str = "mtls.dr-overlap";

/// Whether some namespace sees both rules.
fn share_a_namespace(a: &Rule, b: &Rule) -> bool {
    let sees = |r: &Rule, ns: &str| r.ns == ns || r.export.visible_to(Some(ns));
    if a.ns == b.ns || sees(a, b.ns) || sees(b, a.ns) {
        return true;
    }
    match (&a.export, &b.export) {
        (Export::All, Export::All) => true,
        (Export::All, Export::Namespaces(s)) | (Export::Namespaces(s), Export::All) => {
            !s.is_empty()
        }
        (Export::Namespaces(x), Export::Namespaces(y)) => x.intersection(y).next().is_some(),
        _ => false,
    }
}

fn subsets_collide(a: &Rule, b: &Rule) -> bool {
    let (sa, sb) = (a.subsets(), b.subsets());
    if sa.is_empty() || sb.is_empty() {
        return true;
    }
    let sa: BTreeSet<&str> = sa.into_iter().collect();
    sb.iter().any(|s| sa.contains(s))
}

impl Check for MtlsDrOverlap {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "two DestinationRules for the same host (and subset) are visible to the same namespace"
    }

    fn run(&self, _snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let rules = &ctx.mesh.rules;
        let mut by_host: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            if !r.selective {
                by_host.entry(r.host.as_str()).or_default().push(i);
            }
        }
        let mut collisions: Vec<Vec<usize>> = vec![Vec::new(); rules.len()];
        for group in by_host.values().filter(|g| g.len() > 1) {
            for (k, &a) in group.iter().enumerate() {
                for &b in &group[k + 1..] {
                    if share_a_namespace(&rules[a], &rules[b])
                        && subsets_collide(&rules[a], &rules[b])
                    {
                        collisions[a].push(b);
                        collisions[b].push(a);
                    }
                }
            }
        }
        // One finding per colliding rule: tens of thousands on a large mesh, so sized once.
        let mut out = Vec::with_capacity(collisions.iter().filter(|o| !o.is_empty()).count());
        for (i, others) in collisions.iter().enumerate() {
            if others.is_empty() {
                continue;
            }
            let names: Vec<String> = others.iter().map(|j| rules[*j].obj.reference()).collect();
            // Pilot merges same-host rules oldest first (creationTimestamp, then name.namespace):
            // subsets are added, the first top-level trafficPolicy is kept
            // (pilot/pkg/model/destination_rule.go@1.4.2:33-62, @1.22.0:40-120).
            let age = |k: usize| {
                let r = &rules[k];
                (r.obj.created(), format!("{}.{}", r.obj.name(), r.ns))
            };
            let keeper = std::iter::once(i)
                .chain(others.iter().copied())
                .filter(|k| rules[*k].policy().is_some())
                .min_by_key(|k| age(*k));
            let effect = match keeper {
                Some(k) if k == i => "Pilot merges them and keeps this rule's trafficPolicy (the oldest with one); the others' are ignored".to_string(),
                Some(k) if rules[i].policy().is_some() => format!(
                    "Pilot merges them and keeps the trafficPolicy of the older {}: this rule's is ignored",
                    rules[k].obj.reference()
                ),
                Some(k) => format!(
                    "Pilot merges them: this rule adds only subsets; the trafficPolicy is {}'s",
                    rules[k].obj.reference()
                ),
                None => "Pilot merges them: subsets are added, a duplicate subset name keeps the older rule's".to_string(),
            };
            out.push(
                Finding::warn(
                    ID,
                    format!(
                        "host {} also has {}: a namespace sees both; {effect}",
                        rules[i].host,
                        list(&names, 3)
                    ),
                )
                .on(rules[i].obj)
                .hint("merge them into one DestinationRule, or narrow exportTo so each namespace sees one"),
            );
        }
        or_pass(ID, out, "no two DestinationRules compete for a host")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Pass, Warn};
    use crate::doctor::testutil::{Fixture, expect, flagged};

    fn dr(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn table() {
        let cases = [
            (
                "same host, same namespace",
                dr("a", "x", "{host: h}") + &dr("a", "w", "{host: h.a.svc.cluster.local}"),
                Warn,
            ),
            (
                "different hosts",
                dr("a", "x", "{host: h}") + &dr("a", "w", "{host: g}"),
                Pass,
            ),
            (
                "disjoint subsets",
                dr("a", "x", "{host: h, subsets: [{name: v1}]}")
                    + &dr("a", "w", "{host: h, subsets: [{name: v2}]}"),
                Pass,
            ),
            (
                "shared subset",
                dr("a", "x", "{host: h, subsets: [{name: v1}]}")
                    + &dr("a", "w", "{host: h, subsets: [{name: v1}, {name: v3}]}"),
                Warn,
            ),
            (
                "exported from two namespaces",
                dr("a", "x", "{host: h.a.svc.cluster.local}")
                    + &dr("b", "w", "{host: h.a.svc.cluster.local}"),
                Warn,
            ),
            (
                "both private to their namespaces",
                dr("a", "x", "{host: h.a.svc.cluster.local, exportTo: ['.']}")
                    + &dr("b", "w", "{host: h.a.svc.cluster.local, exportTo: ['.']}"),
                Pass,
            ),
            (
                "wildcard and exact do not compete (most specific wins)",
                dr("a", "x", "{host: '*.a.svc.cluster.local'}") + &dr("a", "w", "{host: h}"),
                Pass,
            ),
        ];
        for (case, yaml, severity) in cases {
            expect(
                &Fixture::empty().with(&yaml).run(&MtlsDrOverlap),
                severity,
                case,
            );
        }
    }

    /// A `workloadSelector` rule is private to the clients it selects from 1.14; before, Pilot
    /// does not know the field and merges it with the host's other rules.
    #[test]
    fn selector_rules_overlap_only_before_1_14() {
        let yaml = dr("a", "x", "{host: h}")
            + &dr(
                "a",
                "w",
                "{host: h, workloadSelector: {matchLabels: {app: legacy}}}",
            );
        for (minor, severity) in [(13, Warn), (14, Pass), (22, Pass)] {
            expect(
                &Fixture::modern()
                    .release(minor)
                    .with(&yaml)
                    .run(&MtlsDrOverlap),
                severity,
                &format!("Istio 1.{minor}"),
            );
        }
    }

    #[test]
    fn says_whose_policy_pilot_keeps() {
        let yaml = dr(
            "a",
            "old",
            "{host: h, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
        )
        .replace(
            "namespace: a}",
            "namespace: a, creationTimestamp: '2020-01-01T00:00:00Z'}",
        ) + &dr(
            "a",
            "new",
            "{host: h, trafficPolicy: {tls: {mode: DISABLE}}}",
        )
        .replace(
            "namespace: a}",
            "namespace: a, creationTimestamp: '2021-01-01T00:00:00Z'}",
        );
        let out = Fixture::empty().with(&yaml).run(&MtlsDrOverlap);
        let new = out
            .iter()
            .find(|f| f.object == "DestinationRule a/new")
            .unwrap();
        assert!(
            new.message.contains(
                "keeps the trafficPolicy of the older DestinationRule a/old: this rule's is ignored"
            ),
            "{}",
            new.message
        );
        let old = out
            .iter()
            .find(|f| f.object == "DestinationRule a/old")
            .unwrap();
        assert!(
            old.message.contains("keeps this rule's trafficPolicy"),
            "{}",
            old.message
        );
    }

    #[test]
    fn each_rule_is_flagged_once_with_its_peers() {
        let yaml =
            dr("a", "x", "{host: h}") + &dr("a", "w", "{host: h}") + &dr("a", "z", "{host: h}");
        let out = Fixture::empty().with(&yaml).run(&MtlsDrOverlap);
        assert_eq!(flagged(&out).len(), 3);
        assert!(
            out[0]
                .message
                .contains("DestinationRule a/w, DestinationRule a/z"),
            "{}",
            out[0].message
        );
    }
}
