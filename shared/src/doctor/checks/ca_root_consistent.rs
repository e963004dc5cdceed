//! `ca.root-consistent`: one root of trust across `cacerts`, root ConfigMaps, `istio.*` secrets and clusters.

use std::collections::BTreeSet;

use super::{list, or_pass};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{CACERTS_SECRET, ROOT_CERT_CONFIGMAP};
use crate::pki;
use crate::snapshot::{Kind, Obj, Snapshot, SourceKind};

/// Fails when a source of root certificates shares no root with the reference (`cacerts`, else
/// the root most sources carry); warns when it shares one but differs (a rotation in progress).
/// With several `--context`s, each cluster's `cacerts` root is compared too.
pub struct CaRootConsistent;

const ID: &str = "ca.root-consistent";

/// Where roots are kept in one cluster: `(object, bytes)`.
fn root_sources<'a>(snap: &'a Snapshot, istio_ns: &str) -> Vec<(&'a Obj, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(s) = snap.get(Kind::Secret, istio_ns, CACERTS_SECRET)
        && let Some(root) = s.data(pki::ROOT_CERT)
    {
        out.push((s, root));
    }
    for cm in snap
        .of(Kind::ConfigMap)
        .iter()
        .filter(|c| c.name() == ROOT_CERT_CONFIGMAP)
    {
        if let Some(root) = cm.data(pki::ROOT_CERT) {
            out.push((cm, root));
        }
    }
    for s in snap
        .of(Kind::Secret)
        .iter()
        .filter(|s| s.name().starts_with("istio."))
    {
        if let Some(root) = s.data(pki::ROOT_CERT) {
            out.push((s, root));
        }
    }
    out
}

fn fingerprints(pem: &[u8]) -> Result<BTreeSet<String>, String> {
    pki::root_identities(pem)
        .map(|ids| ids.into_iter().map(|i| i.sha256).collect())
        .map_err(|e| e.to_string())
}

fn short(fp: &BTreeSet<String>) -> String {
    let v: Vec<String> = fp.iter().map(|f| f.chars().take(23).collect()).collect();
    list(&v, 2)
}

impl Check for CaRootConsistent {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "roots differ between cacerts, istio-ca-root-cert ConfigMaps, istio.<sa> secrets, and across --contexts"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if snap.source == SourceKind::None
            || !(snap.knows(Kind::Secret) || snap.knows(Kind::ConfigMap))
        {
            return vec![Finding::skip(
                ID,
                "no Secrets or ConfigMaps in the source to read roots from",
            )];
        }
        let sources = root_sources(snap, &ctx.istio_ns);
        if sources.is_empty() {
            return vec![Finding::skip(
                ID,
                format!(
                    "no root certificates found ({CACERTS_SECRET}, {ROOT_CERT_CONFIGMAP}, istio.<sa> secrets)"
                ),
            )];
        }
        let mut out = Vec::new();
        let mut parsed: Vec<(&Obj, BTreeSet<String>)> = Vec::new();
        for (obj, pem) in &sources {
            match fingerprints(pem) {
                Ok(fp) => parsed.push((obj, fp)),
                Err(e) => out.push(Finding::fail(ID, format!("root-cert.pem {e}")).on(obj)),
            }
        }
        // The reference: cacerts when present (it is what the CA signs with), else the most common set.
        let reference: Option<(String, BTreeSet<String>)> = parsed
            .iter()
            .find(|(o, _)| o.kind() == "Secret" && o.name() == CACERTS_SECRET)
            .map(|(o, fp)| (o.reference(), fp.clone()))
            .or_else(|| {
                let mut counts: Vec<(usize, &BTreeSet<String>, &Obj)> = Vec::new();
                for (o, fp) in &parsed {
                    match counts.iter_mut().find(|(_, f, _)| *f == fp) {
                        Some(c) => c.0 += 1,
                        None => counts.push((1, fp, o)),
                    }
                }
                counts.sort_by_key(|c| std::cmp::Reverse(c.0));
                counts.first().map(|(_, fp, o)| {
                    (
                        format!("most sources (e.g. {})", o.reference()),
                        (*fp).clone(),
                    )
                })
            });
        if let Some((ref_name, ref_fp)) = &reference {
            // One finding per distinct root set, naming the first object and counting the rest:
            // a stale CA shows up in every istio.<sa> secret at once.
            let mut groups: Vec<(&BTreeSet<String>, Vec<&Obj>)> = Vec::new();
            for (obj, fp) in &parsed {
                if fp == ref_fp {
                    continue;
                }
                match groups.iter_mut().find(|(g, _)| *g == fp) {
                    Some((_, objs)) => objs.push(obj),
                    None => groups.push((fp, vec![obj])),
                }
            }
            for (fp, objs) in groups {
                let also = if objs.len() > 1 {
                    let rest: Vec<String> = objs[1..].iter().map(|o| o.reference()).collect();
                    format!(" (as do {} more: {})", rest.len(), list(&rest, 3))
                } else {
                    String::new()
                };
                let finding = if fp.is_disjoint(ref_fp) {
                    Finding::fail(
                        ID,
                        format!(
                            "trusts root {}{also} but {ref_name} has {}: workloads on either side reject each other's certificates",
                            short(fp),
                            short(ref_fp)
                        ),
                    )
                    .hint("redistribute one root: restart the CA after fixing cacerts, or delete the stale secrets/ConfigMaps so Istio rewrites them")
                } else {
                    Finding::warn(
                        ID,
                        format!(
                            "shares a root with {ref_name} but differs{also} (a rotation in progress?)"
                        ),
                    )
                };
                out.push(finding.on(objs[0]));
            }
            // Across clusters: report each pair once, from the cluster whose context sorts first.
            for other in &ctx.others {
                if other.context <= snap.context {
                    continue;
                }
                let other_ns = other.istio_namespace();
                let Some((obj, pem)) = root_sources(other, other_ns).into_iter().next() else {
                    continue;
                };
                let Ok(fp) = fingerprints(&pem) else { continue };
                if fp.is_disjoint(ref_fp) {
                    out.push(
                        Finding::fail(
                            ID,
                            format!(
                                "context {}: {} trusts root {} but context {} trusts {}: cross-cluster mTLS fails",
                                other.context.as_deref().unwrap_or("?"),
                                obj.reference(),
                                short(&fp),
                                snap.context.as_deref().unwrap_or("?"),
                                short(ref_fp)
                            ),
                        )
                        .object(obj.reference())
                        .hint(format!("plug the same root into every cluster's cacerts, in this one with: {}", super::plug_ca_command(snap, ctx))),
                    );
                }
            }
        }
        or_pass(ID, out, format!("{} root source(s) agree", parsed.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip};
    use crate::doctor::testutil::{Fixture, expect};

    fn sample(name: &str) -> String {
        std::fs::read_to_string(kube_sim::testenv::conformance("certs/samples").join(name)).unwrap()
    }
    fn cacerts(root: &str) -> String {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cacerts", "namespace": "istio-system"}, "stringData": {"root-cert.pem": root}}).to_string()
    }
    fn cm(ns: &str, root: &str) -> String {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert", "namespace": ns}, "data": {"root-cert.pem": root}}).to_string()
    }

    #[test]
    fn table() {
        let (root, other) = (sample("root-cert.pem"), sample("ca-cert.pem"));
        let cases = [
            (
                "cacerts and ConfigMaps agree",
                Fixture::modern()
                    .with(&cacerts(&root))
                    .with(&cm("a", &root)),
                Pass,
            ),
            (
                "a ConfigMap trusts another root",
                Fixture::modern()
                    .with(&cacerts(&root))
                    .with(&cm("a", &other)),
                Fail,
            ),
            (
                "no cacerts: the odd one out fails",
                Fixture::modern()
                    .with(&cm("a", &root))
                    .with(&cm("b", &root))
                    .with(&cm("c", &other)),
                Fail,
            ),
            (
                "garbage root",
                Fixture::modern().with(&cm("a", "nope")),
                Fail,
            ),
            (
                "no roots at all",
                Fixture::modern().with(&cm("a", &root).replace("istio-ca-root-cert", "unrelated")),
                Skip,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&CaRootConsistent), severity, case);
        }
    }

    #[test]
    fn one_finding_per_stale_root() {
        let (root, other) = (sample("root-cert.pem"), sample("ca-cert.pem"));
        let out = Fixture::modern()
            .with(&cacerts(&root))
            .with(&cm("a", &other))
            .with(&cm("b", &other))
            .with(&cm("c", &other))
            .run(&CaRootConsistent);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].object, "ConfigMap a/istio-ca-root-cert");
        assert!(
            out[0].message.contains(
                "(as do 2 more: ConfigMap b/istio-ca-root-cert, ConfigMap c/istio-ca-root-cert)"
            ),
            "{}",
            out[0].message
        );
    }

    #[test]
    fn across_contexts() {
        let (root, other) = (sample("root-cert.pem"), sample("ca-cert.pem"));
        let mut b = Fixture::modern().with(&cacerts(&other)).snapshot();
        b.context = Some("b".into());
        let a = Fixture::modern().with(&cacerts(&root)).other(b.clone());
        let mut snap = a.snapshot();
        snap.context = Some("a".into());
        let opts = crate::doctor::CheckOptions::default();
        let ctx = CheckContext::new(&snap, &opts, vec![&b]);
        let out = CaRootConsistent.run(&snap, &ctx);
        expect(&out, Fail, "two clusters, two roots");
        assert!(
            out[0]
                .message
                .starts_with("context b: Secret istio-system/cacerts"),
            "{}",
            out[0].message
        );
        b = Fixture::modern().with(&cacerts(&root)).snapshot();
        b.context = Some("b".into());
        let ctx = CheckContext::new(&snap, &opts, vec![&b]);
        expect(
            &CaRootConsistent.run(&snap, &ctx),
            Pass,
            "two clusters, one root",
        );
    }
}
