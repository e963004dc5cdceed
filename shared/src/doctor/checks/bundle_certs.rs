//! `bundle.certs`: the bundle's identity is usable — certificates (legacy) or token and root (modern).

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::{or_pass, system_time};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::Era;
use crate::pki;
use crate::snapshot::{Kind, Snapshot, SourceKind, VmBundle};

/// Legacy: judges root-cert.pem, cert-chain.pem and key.pem with [`pki::check_workload`] (chain to
/// the root, key matches, validity, SAN = cluster.env's namespace and service account).
/// Modern: the istio-token must be an unexpired JWT for audience `istio-ca`, and root-cert.pem readable.
pub struct BundleCerts;

const ID: &str = "bundle.certs";

/// The service account `cluster.env` names, under the keys meshvm and istioctl write.
fn env_service_account(env: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    ["SERVICE_ACCOUNT", "ISTIO_SERVICE_ACCOUNT"]
        .iter()
        .find_map(|k| env.get(*k))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn legacy(snap: &Snapshot, bundle: &VmBundle, ctx: &CheckContext, object: &str) -> Vec<Finding> {
    let (Some(root), Some(chain), Some(key)) = (
        bundle.file("root-cert.pem"),
        bundle.file("cert-chain.pem"),
        bundle.file("key.pem"),
    ) else {
        return vec![Finding::skip(
            ID,
            "the bundle lacks root-cert.pem, cert-chain.pem or key.pem (see bundle.files)",
        )];
    };
    let material = pki::WorkloadMaterial {
        root_cert: pki::PemInput::new("root-cert.pem", root.data.clone()),
        cert_chain: pki::PemInput::new("cert-chain.pem", chain.data.clone()),
        key: pki::PemInput::new("key.pem", key.data.clone()),
    };
    let env = bundle.cluster_env().unwrap_or_default();
    let ns = env
        .get("ISTIO_NAMESPACE")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let sa = env_service_account(&env);
    let expected = ns.zip(sa);
    let warn_within = Duration::from_secs(ctx.expiry_warn_secs.max(0) as u64);
    let mut out: Vec<Finding> =
        pki::check_workload(&material, expected, system_time(ctx.now), warn_within)
            .into_iter()
            .map(|f| {
                let base = match f.severity {
                    pki::CertSeverity::Error => Finding::fail(ID, f.to_string()),
                    pki::CertSeverity::Warning => Finding::warn(ID, f.to_string()),
                };
                base.object(object).hint(format!(
                    "re-create the bundle (it fetches a fresh istio.<sa> secret): {}",
                    super::rebundle_command(bundle)
                ))
            })
            .collect();
    // The legacy cluster.env names no service account: compare at least the namespace.
    if expected.is_none()
        && let Some(ns) = ns
        && let Some(id) = leaf_spiffe_id(&chain.data)
        && id.namespace != ns
    {
        out.push(
            Finding::fail(
                ID,
                format!(
                    "cert-chain.pem is for {id} but cluster.env's ISTIO_NAMESPACE is {ns}: peers reject the VM's identity"
                ),
            )
            .object(object)
            .hint(format!(
                "re-create the bundle for the VM's namespace: {}",
                super::rebundle_command(bundle)
            )),
        );
    }
    out.extend(root_cross_check(
        snap,
        ctx,
        Era::Legacy,
        ns,
        bundle,
        &root.data,
        object,
    ));
    let checked = if expected.is_some() {
        "chain, key, validity and SAN"
    } else {
        "chain, key, validity and SAN namespace"
    };
    or_pass(ID, out, format!("legacy identity: {checked} good"))
}

/// The SPIFFE identity of the first certificate in a PEM chain.
pub(super) fn leaf_spiffe_id(pem: &[u8]) -> Option<pki::SpiffeId> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = block.parse_x509().ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => pki::spiffe_id(uri),
        _ => None,
    })
}

/// Citadel's/istiod's self-signed CA keeps its root as `ca-cert.pem` of this Secret in the Istio
/// namespace (istio/istio@1.4.2 security/pkg/pki/ca/ca.go:45-49,169; @1.22.0 the same file
/// :44-48,217).
pub(super) const SELF_SIGNED_CA_SECRET: &str = "istio-ca-secret";
/// The type of the `istio.<sa>` Secrets Citadel writes (1.4.2
/// security/pkg/k8s/controller/workloadsecret.go:44).
const ISTIO_SECRET_TYPE: &str = "istio.io/key-and-cert";

/// The root the cluster's CA signs with today, and the object it was read from. Not `cacerts`
/// first: Citadel reads `cacerts` only when it starts, and without it signs under its self-signed
/// root — so the root is taken from what the CA itself publishes.
/// - legacy: the `root-cert.pem` Citadel writes into every `istio.<sa>` Secret (its current root,
///   workloadsecret.go@1.4.2:338-342, rewritten on refresh :597), the bundle's namespace first;
///   else `istio-ca-secret`'s `ca-cert.pem` (self-signed); else `cacerts` (Citadel not yet run).
/// - modern: the `istio-ca-root-cert` ConfigMap istiod writes into each namespace
///   (pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go@1.22.0:36), the bundle's
///   namespace first; else `cacerts`; else `istio-ca-secret`.
pub(super) fn signing_root(
    snap: &Snapshot,
    ctx: &CheckContext,
    era: Era,
    bundle_ns: Option<&str>,
) -> Option<(String, Vec<u8>)> {
    let read = |o: &crate::snapshot::Obj, key: &str| o.data(key).map(|d| (o.reference(), d));
    let first_in = |objs: Vec<&crate::snapshot::Obj>, key: &str| {
        objs.iter()
            .find(|o| Some(o.namespace()) == bundle_ns)
            .or_else(|| objs.iter().find(|o| o.namespace() == ctx.istio_ns))
            .or_else(|| objs.first())
            .and_then(|o| read(o, key))
    };
    let cacerts = || {
        snap.get(Kind::Secret, &ctx.istio_ns, crate::istio::CACERTS_SECRET)
            .and_then(|o| read(o, pki::ROOT_CERT))
    };
    let self_signed = || {
        snap.get(Kind::Secret, &ctx.istio_ns, SELF_SIGNED_CA_SECRET)
            .and_then(|o| read(o, "ca-cert.pem"))
    };
    match era {
        Era::Legacy => {
            let issued: Vec<&crate::snapshot::Obj> = snap
                .typed::<k8s_openapi::api::core::v1::Secret>()
                .filter(|(s, typed)| {
                    s.name().starts_with("istio.")
                        && typed.type_.as_deref() == Some(ISTIO_SECRET_TYPE)
                        && s.data(pki::ROOT_CERT).is_some()
                })
                .map(|(s, _)| s)
                .collect();
            first_in(issued, pki::ROOT_CERT)
                .or_else(self_signed)
                .or_else(cacerts)
        }
        Era::Modern => {
            let maps: Vec<&crate::snapshot::Obj> = snap
                .of(Kind::ConfigMap)
                .iter()
                .filter(|c| c.name() == crate::istio::ROOT_CERT_CONFIGMAP)
                .collect();
            first_in(maps, pki::ROOT_CERT)
                .or_else(cacerts)
                .or_else(self_signed)
        }
    }
}

/// With a cluster to compare: the bundle's root must be the root the cluster's CA signs with.
fn root_cross_check(
    snap: &Snapshot,
    ctx: &CheckContext,
    era: Era,
    bundle_ns: Option<&str>,
    bundle: &VmBundle,
    bundle_root: &[u8],
    object: &str,
) -> Option<Finding> {
    let Some((source, cluster_root)) = signing_root(snap, ctx, era, bundle_ns) else {
        // A live cluster shows its CA's root somewhere; finding none is worth saying.
        return (snap.source == SourceKind::Live).then(|| {
            Finding::warn(
                ID,
                format!(
                    "cannot compare root-cert.pem with the cluster's: no istio.<sa> Secret, istio-ca-root-cert ConfigMap, {SELF_SIGNED_CA_SECRET} or cacerts in {} could be read",
                    ctx.istio_ns
                ),
            )
            .object(object)
        });
    };
    let cmp = pki::compare_roots(bundle_root, &cluster_root).ok()?;
    (!cmp.overlap()).then(|| {
        Finding::fail(
            ID,
            format!(
                "root-cert.pem is not the root the cluster signs with (read from {source}): the VM would trust another CA than its peers, and they would reject its certificate"
            ),
        )
        .object(object)
        .hint(format!(
            "re-create the bundle against this cluster: {}",
            super::rebundle_command(bundle)
        ))
    })
}

fn modern(snap: &Snapshot, bundle: &VmBundle, ctx: &CheckContext, object: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    match bundle.file("istio-token") {
        None => out.push(Finding::skip(
            ID,
            "the bundle has no istio-token (see bundle.files)",
        )),
        Some(token) => {
            let text = String::from_utf8_lossy(&token.data);
            match jwt_claims(text.trim()) {
                Err(problem) => out.push(
                    Finding::fail(ID, format!("istio-token {problem}"))
                        .object(object)
                        .hint(format!(
                            "re-create the bundle (it requests a token for audience istio-ca): {}",
                            super::rebundle_command(bundle)
                        )),
                ),
                Ok(claims) => {
                    if let Some(exp) = claims.get("exp").and_then(Value::as_i64)
                        && exp <= ctx.now
                    {
                        out.push(
                            Finding::fail(ID, format!("istio-token expired {} s ago: the VM cannot get its first certificate", ctx.now - exp))
                                .object(object)
                                .hint("re-create the bundle shortly before installing the VM (tokens are short-lived)"),
                        );
                    }
                    let aud: Vec<&str> = match claims.get("aud") {
                        Some(Value::String(a)) => vec![a.as_str()],
                        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                        _ => vec![],
                    };
                    if !aud.contains(&"istio-ca") {
                        out.push(
                            Finding::fail(ID, format!("istio-token audience is {aud:?}, not istio-ca: istiod rejects it"))
                                .object(object)
                                .hint(format!("re-create the bundle (it requests the token for audience istio-ca): {}", super::rebundle_command(bundle))),
                        );
                    }
                }
            }
        }
    }
    match bundle.file("root-cert.pem") {
        None => {}
        Some(root) => {
            if let Err(e) = pki::root_identities(&root.data) {
                out.push(
                    Finding::fail(ID, format!("root-cert.pem {e}"))
                        .object(object)
                        .hint("copy root-cert.pem from the istio-ca-root-cert ConfigMap"),
                );
            } else {
                let env = bundle.cluster_env().unwrap_or_default();
                let ns = env
                    .get("ISTIO_NAMESPACE")
                    .map(String::as_str)
                    .filter(|s| !s.is_empty());
                out.extend(root_cross_check(
                    snap,
                    ctx,
                    Era::Modern,
                    ns,
                    bundle,
                    &root.data,
                    object,
                ));
            }
        }
    }
    or_pass(
        ID,
        out,
        "istio-token is a live istio-ca token; root-cert.pem readable",
    )
}

/// The claims of a JWT (signature not checked: only istiod can).
pub(super) fn jwt_claims(token: &str) -> Result<serde_json::Map<String, Value>, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("is not a JWT (expected three dot-separated parts)".into());
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|_| "has a payload that is not base64url".to_string())?;
    match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("has a payload that is not a JSON object".into()),
    }
}

impl Check for BundleCerts {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "legacy: chain does not verify, key mismatch, expired, SAN differs from cluster.env; modern: token expired or audience not istio-ca, root unreadable"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let Some(bundle) = &snap.bundle else {
            return vec![Finding::skip(ID, "no --bundle given")];
        };
        let object = format!("Bundle {}", bundle.path.display());
        match bundle.era().or(ctx.era) {
            Some(Era::Legacy) => legacy(snap, bundle, ctx, &object),
            Some(Era::Modern) => modern(snap, bundle, ctx, &object),
            None => vec![Finding::skip(
                ID,
                "cannot tell the bundle's era (see bundle.files)",
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, NOW, expect};

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(kube_sim::testenv::conformance("certs/samples").join(name)).unwrap()
    }

    fn jwt(claims: &serde_json::Value) -> Vec<u8> {
        let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            "{}.{}.sig",
            e(br#"{"alg":"RS256"}"#),
            e(claims.to_string().as_bytes())
        )
        .into_bytes()
    }

    #[test]
    fn legacy_table() {
        // workload-foo: spiffe://trust-domain-foo/ns/foo/sa/foo, issued by ca-cert.pem under
        // root-cert.pem; the file already carries the chain up to the root.
        let chain = sample("workload-foo-cert.pem");
        let build = |env: &str, key: &str| {
            let files: Vec<(&str, Vec<u8>, u32)> = vec![
                ("root-cert.pem", sample("root-cert.pem"), 0o644),
                ("cert-chain.pem", chain.clone(), 0o644),
                ("key.pem", sample(key), 0o600),
                ("cluster.env", env.as_bytes().to_vec(), 0o644),
            ];
            let refs: Vec<(&str, &[u8], u32)> = files
                .iter()
                .map(|(n, d, m)| (*n, d.as_slice(), *m))
                .collect();
            Fixture::legacy().bundle(&refs)
        };
        let cases = [
            (
                "matching identity",
                build(
                    "ISTIO_NAMESPACE=foo\nSERVICE_ACCOUNT=foo\n",
                    "workload-foo-key.pem",
                ),
                Pass,
            ),
            (
                "SAN names another namespace",
                build(
                    "ISTIO_NAMESPACE=bar\nSERVICE_ACCOUNT=foo\n",
                    "workload-foo-key.pem",
                ),
                Fail,
            ),
            (
                "key of another certificate",
                build("ISTIO_NAMESPACE=foo\nSERVICE_ACCOUNT=foo\n", "ca-key.pem"),
                Fail,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&BundleCerts), severity, case);
        }
    }

    #[test]
    fn modern_table() {
        let root = sample("root-cert.pem");
        let build = |token: Vec<u8>, root: &[u8]| {
            let files: Vec<(&str, &[u8], u32)> = vec![
                ("istio-token", token.as_slice(), 0o600),
                ("root-cert.pem", root, 0o644),
                ("mesh.yaml", b"x: y", 0o644),
            ];
            Fixture::modern().bundle(
                &files
                    .iter()
                    .map(|(n, d, m)| (*n, *d, *m))
                    .collect::<Vec<_>>(),
            )
        };
        let cases = [
            (
                "live token",
                build(
                    jwt(&serde_json::json!({"aud": ["istio-ca"], "exp": NOW + 3600})),
                    &root,
                ),
                Pass,
            ),
            (
                "expired",
                build(
                    jwt(&serde_json::json!({"aud": "istio-ca", "exp": NOW - 1})),
                    &root,
                ),
                Fail,
            ),
            (
                "wrong audience",
                build(
                    jwt(
                        &serde_json::json!({"aud": ["https://kubernetes.default.svc"], "exp": NOW + 3600}),
                    ),
                    &root,
                ),
                Fail,
            ),
            ("not a jwt", build(b"opaque".to_vec(), &root), Fail),
            (
                "root unreadable",
                build(
                    jwt(&serde_json::json!({"aud": ["istio-ca"], "exp": NOW + 3600})),
                    b"junk",
                ),
                Fail,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&BundleCerts), severity, case);
        }
        // Cross-checked with the cluster: the bundle's root must be the cluster's.
        let cm = |pem: &[u8]| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert", "namespace": "istio-system"}, "data": {"root-cert.pem": String::from_utf8_lossy(pem)}}).to_string()
        };
        let token = jwt(&serde_json::json!({"aud": ["istio-ca"], "exp": NOW + 3600}));
        let same = build(token.clone(), &root).with(&cm(&root));
        expect(
            &same.run(&BundleCerts),
            Pass,
            "bundle root is the cluster's",
        );
        let other = build(token, &root).with(&cm(&sample("ca-cert.pem")));
        expect(
            &other.run(&BundleCerts),
            Fail,
            "bundle root is not the cluster's",
        );
        expect(&Fixture::modern().run(&BundleCerts), Skip, "no bundle");
    }

    /// Legacy without `cacerts`: Citadel signs with its self-signed root, which it publishes in
    /// every `istio.<sa>` Secret (and keeps in `istio-ca-secret`): a bundle under another root fails.
    #[test]
    fn legacy_root_is_the_one_citadel_signs_with() {
        let chain = sample("workload-foo-cert.pem");
        let env = "ISTIO_NAMESPACE=foo\nSERVICE_ACCOUNT=foo\n";
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let issued = |root: &[u8]| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: istio.default, namespace: foo}}\ntype: istio.io/key-and-cert\ndata: {{root-cert.pem: {}}}\n",
                b64(root)
            )
        };
        let self_signed = |root: &[u8]| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: istio-ca-secret, namespace: istio-system}}\ntype: istio.io/ca-root\ndata: {{ca-cert.pem: {}}}\n",
                b64(root)
            )
        };
        let build = |cluster: &str| {
            let files: Vec<(&str, Vec<u8>, u32)> = vec![
                ("root-cert.pem", sample("root-cert.pem"), 0o644),
                ("cert-chain.pem", chain.clone(), 0o644),
                ("key.pem", sample("workload-foo-key.pem"), 0o600),
                ("cluster.env", env.as_bytes().to_vec(), 0o644),
            ];
            let refs: Vec<(&str, &[u8], u32)> = files
                .iter()
                .map(|(n, d, m)| (*n, d.as_slice(), *m))
                .collect();
            Fixture::legacy().with(cluster).live().bundle(&refs)
        };
        let root = sample("root-cert.pem");
        let other = sample("ca-cert.pem");
        expect(
            &build(&issued(&root)).run(&BundleCerts),
            Pass,
            "Citadel issues under the bundle's root",
        );
        let out = build(&issued(&other)).run(&BundleCerts);
        expect(&out, Fail, "Citadel issues under another root, no cacerts");
        assert!(
            out[0].message.contains(
                "not the root the cluster signs with (read from Secret foo/istio.default)"
            ),
            "{out:#?}"
        );
        assert!(
            out[0]
                .hint
                .contains("kubectl meshvm bundle -n foo -s foo -d bundle --force"),
            "{out:#?}"
        );
        expect(
            &build(&self_signed(&other)).run(&BundleCerts),
            Fail,
            "self-signed Citadel, no istio.* yet",
        );
        expect(
            &build(&self_signed(&root)).run(&BundleCerts),
            Pass,
            "self-signed Citadel under the bundle's root",
        );
        // cacerts holding the bundle's root does not help while Citadel still signs with another.
        let plugged = format!(
            "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cacerts, namespace: istio-system}}\ndata: {{root-cert.pem: {}}}\n",
            issued(&other),
            b64(&root)
        );
        expect(
            &build(&plugged).run(&BundleCerts),
            Fail,
            "cacerts not loaded yet",
        );
        let out = build("").run(&BundleCerts);
        expect(&out, Warn, "a live cluster without any root");
    }
}
