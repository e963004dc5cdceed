//! `vm.credential-expiry`: how long each VM's credentials last, and whether the bundle still
//! trusts the root the cluster signs with.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use super::bundle_certs::{jwt_claims, leaf_spiffe_id, signing_root};
use crate::doctor::mesh::SYSTEM_NAMESPACES;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{DEFAULT_ISTIO_NAMESPACE, Era, SERVICE_ACCOUNTS_ANNOTATION};
use crate::pki;
use crate::snapshot::{Kind, Snapshot, SourceKind, VmBundle};

/// For every VM doctor can see, the time its credentials have left: legacy, the `istio.<sa>`
/// Secret of each registered VM's ServiceAccount and the bundle's `cert-chain.pem`; modern, the
/// bundle's `istio-token` and the health of auto-registered WorkloadEntries. Warns within
/// `--expiry-warning-days`, fails when expired or when the bundle's root is not the one the
/// cluster signs with today, naming the `bundle --renew` command for that bundle.
pub struct VmCredentialExpiry;

const ID: &str = "vm.credential-expiry";

/// The annotation istiod puts on the WorkloadEntries it creates for auto-registered VMs, naming
/// their WorkloadGroup (istio/istio@1.22.0 pilot/pkg/autoregistration/controller.go:697,733,
/// `annotation.IoIstioAutoRegistrationGroup`); and the one it sets, as RFC 3339 time, when the
/// VM's proxy disconnects and removes when it reconnects (same file :75, :212, :424).
const AUTO_REGISTRATION_GROUP: &str = "istio.io/autoRegistrationGroup";
const DISCONNECTED_AT: &str = "istio.io/disconnectedAt";
/// The condition istiod writes on a WorkloadEntry whose WorkloadGroup has a readiness probe
/// (istio/istio@1.22.0 pilot/pkg/model/status/workloadentry.go:25 `ConditionHealthy`).
const HEALTHY: &str = "Healthy";

/// `3d 4h`, `5h 12m`, `12m`, `40s`: a span of seconds for people.
pub(super) fn span(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

/// `expires in 3d 4h` or `expired 2h 5m ago`.
fn left(expiry: i64, now: i64) -> String {
    if expiry > now {
        format!("expires in {}", span(expiry - now))
    } else {
        format!("expired {} ago", span(now - expiry))
    }
}

/// NotAfter (seconds since the epoch) of the first certificate in a PEM chain.
fn leaf_not_after(pem: &[u8]) -> Option<i64> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = block.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// `'a b'` when a word needs quoting for the shell, else the word.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@' | '+')
        })
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

/// The Istio namespace a modern bundle's `mesh.yaml` names in its discoveryAddress
/// (`istiod[-REV].NS.svc:15012`), as `bundle --renew` reads it.
fn mesh_istio_namespace(bundle: &VmBundle) -> Option<String> {
    let mesh = bundle.text("mesh.yaml")?;
    mesh.split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .find_map(|w| {
            let host = w.strip_prefix("istiod")?.split(':').next()?;
            let mut parts = host.split('.');
            parts.next()?;
            let ns = parts.next()?;
            (parts.next() == Some("svc")).then(|| ns.to_owned())
        })
}

/// The commands that renew this bundle's credentials in place, in backticks: `kubectl meshvm
/// bundle --renew` with the bundle's VM namespace (legacy: its certificate's; modern:
/// cluster.env's), its Istio namespace when not the default, its folder (and `--archive` when
/// doctor was given the archive), then `install.sh --renew` on the VM.
pub(super) fn renew_command(bundle: &VmBundle, era: Era) -> String {
    let env = bundle.cluster_env().unwrap_or_default();
    let get = |k: &str| {
        env.get(k)
            .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            .filter(|v| !v.is_empty())
    };
    let (ns, istio_ns) = match era {
        Era::Legacy => (
            bundle
                .file(pki::CERT_CHAIN)
                .and_then(|f| leaf_spiffe_id(&f.data))
                .map(|id| id.namespace)
                .or_else(|| get("ISTIO_NAMESPACE")),
            get("ISTIO_SYSTEM_NAMESPACE"),
        ),
        Era::Modern => (get("ISTIO_NAMESPACE"), mesh_istio_namespace(bundle)),
    };
    let mut cmd = String::from("kubectl meshvm bundle --renew");
    if let Some(ns) = ns {
        let _ = write!(cmd, " -n {}", shell_word(&ns));
    }
    if let Some(ns) = istio_ns.filter(|n| n != DEFAULT_ISTIO_NAMESPACE) {
        let _ = write!(cmd, " --istio-namespace {}", shell_word(&ns));
    }
    let path = bundle.path.display().to_string();
    match path
        .strip_suffix(".tar.gz")
        .or_else(|| path.strip_suffix(".tgz"))
    {
        Some(dir) => {
            let _ = write!(
                cmd,
                " -d {} --archive {}",
                shell_word(dir),
                shell_word(&path)
            );
        }
        None => {
            let _ = write!(cmd, " -d {}", shell_word(&path));
        }
    }
    format!("`{cmd}`, then on the VM: `sudo ./install.sh --renew`")
}

/// Judges one expiry: fail when past, warn within the window, else a pass note.
struct Judged {
    out: Vec<Finding>,
    notes: Vec<String>,
}

impl Judged {
    fn expiry(
        &mut self,
        ctx: &CheckContext,
        what: &str,
        expiry: i64,
        finding: impl Fn(Finding) -> Finding,
    ) {
        let message = format!("{what} {}", left(expiry, ctx.now));
        if expiry <= ctx.now {
            self.out.push(finding(Finding::fail(ID, message).now()));
        } else if expiry - ctx.now <= ctx.expiry_warn_secs {
            self.out.push(finding(Finding::warn(
                ID,
                format!(
                    "{message}, within --expiry-warning-days ({})",
                    ctx.expiry_warn_secs / 86_400
                ),
            )));
        } else {
            self.notes.push(message);
        }
    }
}

/// The `(namespace, service account)` of every legacy registered VM: the ServiceAccounts named
/// by `alpha.istio.io/kubernetes-serviceaccounts` on Services outside the system namespaces
/// (plain names are of the Service's namespace; `spiffe://td/ns/N/sa/S` name their own).
fn registered_accounts(snap: &Snapshot) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for svc in snap.of(Kind::Service) {
        let ns = svc.namespace();
        if SYSTEM_NAMESPACES.contains(&ns) {
            continue;
        }
        let Some(value) = svc.annotation(SERVICE_ACCOUNTS_ANNOTATION) else {
            continue;
        };
        for sa in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.insert(
                pki::spiffe_id(sa).map_or((ns.to_string(), sa.to_string()), |id| {
                    (id.namespace, id.service_account)
                }),
            );
        }
    }
    out
}

fn legacy_secrets(snap: &Snapshot, ctx: &CheckContext, bundle: Option<&VmBundle>, j: &mut Judged) {
    for (ns, sa) in registered_accounts(snap) {
        let name = format!("istio.{sa}");
        let Some(secret) = snap.get(Kind::Secret, &ns, &name) else {
            continue;
        };
        let Some(expiry) = secret
            .data(pki::CERT_CHAIN)
            .and_then(|pem| leaf_not_after(&pem))
        else {
            continue;
        };
        let istio_ns = &ctx.istio_ns;
        // Citadel re-issues istio.<sa> before it expires (istio/istio@1.4.2
        // security/pkg/k8s/controller/workloadsecret.go:491-525: refreshed within the grace
        // period, or when its root differs from the CA's),
        // so one near or past its end means Citadel is not refreshing it; the VM keeps the copy
        // its bundle carried either way.
        let then = match bundle {
            Some(b) => format!("; then renew the VM's copy: {}", renew_command(b, Era::Legacy)),
            None => "; then renew the VM's copy with bundle --renew (doctor --bundle FOLDER names the command for that bundle)".to_string(),
        };
        let hint = if expiry <= ctx.now {
            format!(
                "Citadel re-issues it before it expires unless it is not running or cannot write Secrets: restart it, `kubectl -n {istio_ns} rollout restart deployment/istio-citadel`{then}"
            )
        } else {
            format!(
                "Citadel re-issues it at its grace period; if it does not, restart it: `kubectl -n {istio_ns} rollout restart deployment/istio-citadel`{then}"
            )
        };
        j.expiry(
            ctx,
            &format!("registered VM identity {ns}/{sa} (Secret {name})"),
            expiry,
            |f| f.on(secret).hint(hint.clone()),
        );
    }
}

/// An RFC 3339 time as seconds since the epoch.
fn rfc3339(text: &str) -> Option<i64> {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(k8s_openapi::jiff::Timestamp::as_second)
}

fn auto_registered(snap: &Snapshot, ctx: &CheckContext, j: &mut Judged) {
    let mut healthy = 0;
    for we in snap.of(Kind::WorkloadEntry) {
        let Some(group) = we.annotation(AUTO_REGISTRATION_GROUP) else {
            continue;
        };
        let ns = we.namespace();
        if let Some(at) = we.annotation(DISCONNECTED_AT) {
            let since =
                rfc3339(at).map_or(String::new(), |t| format!(" {} ago", span(ctx.now - t)));
            j.out.push(
                Finding::warn(ID, format!("auto-registered VM of WorkloadGroup {group} disconnected from istiod{since} ({at}): its proxy is down or cannot reach istiod — expired credentials are a common cause"))
                    .on(we)
                    .now()
                    .hint(format!("on the VM, `sudo journalctl -u istio` says why; when its token or root is stale, renew its bundle (doctor --bundle with the VM's bundle folder names the command) and run `sudo ./install.sh --renew` there; istiod removes the entry after its cleanup grace period; `kubectl -n {ns} get workloadentry {}` shows it meanwhile", we.name())),
            );
            continue;
        }
        let unhealthy = we
            .at(&["status", "conditions"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| {
                c.get("type").and_then(Value::as_str) == Some(HEALTHY)
                    && c.get("status").and_then(Value::as_str) == Some("False")
            });
        if let Some(c) = unhealthy {
            let since = c
                .get("lastTransitionTime")
                .and_then(Value::as_str)
                .and_then(rfc3339)
                .map_or(String::new(), |t| format!(" for {}", span(ctx.now - t)));
            let why = c
                .get("message")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map_or(String::new(), |m| format!(": {m}"));
            j.out.push(
                Finding::warn(ID, format!("auto-registered VM of WorkloadGroup {group} unhealthy{since}{why}"))
                    .on(we)
                    .now()
                    .hint("on the VM, `sudo journalctl -u istio` says whether its proxy runs and holds a certificate"),
            );
            continue;
        }
        healthy += 1;
    }
    if healthy > 0 {
        j.notes.push(format!(
            "{healthy} auto-registered WorkloadEntr{} connected",
            if healthy == 1 { "y" } else { "ies" }
        ));
    }
}

fn bundle_credentials(
    snap: &Snapshot,
    ctx: &CheckContext,
    bundle: &VmBundle,
    era: Era,
    j: &mut Judged,
) {
    let object = format!("Bundle {}", bundle.path.display());
    let renew = renew_command(bundle, era);
    match era {
        Era::Legacy => {
            if let Some(expiry) = bundle
                .file(pki::CERT_CHAIN)
                .and_then(|f| leaf_not_after(&f.data))
            {
                j.expiry(
                    ctx,
                    "the bundle's certificate (cert-chain.pem)",
                    expiry,
                    |f| {
                        f.object(object.clone()).hint(format!(
                            "re-issue it from the current istio.<sa> Secret: {renew}"
                        ))
                    },
                );
            }
        }
        Era::Modern => {
            if let Some(token) = bundle.file("istio-token") {
                // Only the `exp` claim is read; the token itself is never shown.
                let exp = jwt_claims(String::from_utf8_lossy(&token.data).trim())
                    .ok()
                    .and_then(|c| c.get("exp").and_then(Value::as_i64));
                if let Some(exp) = exp {
                    j.expiry(ctx, "the bundle's istio-token", exp, |f| {
                        f.object(object.clone()).hint(format!(
                            "the VM needs a live token to get its certificate from istiod: {renew}"
                        ))
                    });
                }
            }
        }
    }
    // With a cluster: the bundle's root must be the root the CA signs with today.
    if snap.source == SourceKind::None {
        return;
    }
    let Some(root) = bundle.file(pki::ROOT_CERT) else {
        return;
    };
    let env = bundle.cluster_env().unwrap_or_default();
    let vm_ns = match era {
        Era::Legacy => bundle
            .file(pki::CERT_CHAIN)
            .and_then(|f| leaf_spiffe_id(&f.data))
            .map(|id| id.namespace),
        Era::Modern => None,
    }
    .or_else(|| env.get("ISTIO_NAMESPACE").cloned());
    let Some((source, cluster_root)) = signing_root(snap, ctx, era, vm_ns.as_deref()) else {
        return;
    };
    if let Ok(cmp) = pki::compare_roots(&root.data, &cluster_root)
        && !cmp.overlap()
    {
        j.out.push(
            Finding::fail(ID, format!("the bundle's root-cert.pem is not the root the cluster signs with today (read from {source}): the mesh's root changed, and the VM's credentials stop working as its peers' are re-issued"))
                .object(object)
                .now()
                .hint(format!("renew the bundle's credentials under the current root: {renew}")),
        );
    } else {
        j.notes.push("the bundle's root is the cluster's".into());
    }
}

impl Check for VmCredentialExpiry {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "a VM's credentials expire within --expiry-warning-days or have expired (legacy: registered VMs' istio.<sa> Secrets, the bundle's certificate; modern: the bundle's istio-token, auto-registered WorkloadEntries' health), or the bundle's root is not the cluster's current root"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn bundle_check(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let mut j = Judged {
            out: Vec::new(),
            notes: Vec::new(),
        };
        match ctx.era {
            Some(Era::Legacy) => legacy_secrets(snap, ctx, snap.bundle.as_ref(), &mut j),
            Some(Era::Modern) => auto_registered(snap, ctx, &mut j),
            None => {}
        }
        if let Some(bundle) = &snap.bundle
            && let Some(era) = bundle.era().or(ctx.era)
        {
            bundle_credentials(snap, ctx, bundle, era, &mut j);
        }
        if !j.out.is_empty() {
            return j.out;
        }
        if j.notes.is_empty() && snap.bundle.is_some() {
            return vec![Finding::skip(
                ID,
                "the bundle carries no readable cert-chain.pem or istio-token (see bundle.files)",
            )];
        }
        if j.notes.is_empty() {
            return vec![Finding::pass(
                ID,
                "no VM credentials to judge: no registered VM with an istio.<sa> Secret, no auto-registered WorkloadEntry, no --bundle",
            )];
        }
        vec![Finding::pass(ID, j.notes.join("; "))]
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Warn};
    use crate::doctor::testutil::{Fixture, NOW, expect};

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(kube_sim::testenv::conformance("certs/samples").join(name)).unwrap()
    }

    fn b64(d: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(d)
    }

    fn jwt(exp: i64) -> Vec<u8> {
        let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let claims = serde_json::json!({"aud": ["istio-ca"], "exp": exp, "sub": "system:serviceaccount:vm:vm"});
        format!(
            "{}.{}.c2VjcmV0LXNpZ25hdHVyZQ",
            e(br#"{"alg":"RS256"}"#),
            e(claims.to_string().as_bytes())
        )
        .into_bytes()
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
        assert_eq!(span(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(span(12 * 60 + 5), "12m");
        assert_eq!(span(40), "40s");
        assert_eq!(left(NOW + 3600, NOW), "expires in 1h 0m");
        assert_eq!(left(NOW - 120, NOW), "expired 2m ago");
    }

    /// A legacy VM registered in `foo` under ServiceAccount `foo`, whose `istio.foo` Secret holds
    /// the sample workload certificate (spiffe://…/ns/foo/sa/foo), under `root`.
    fn legacy_cluster(root: &[u8]) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: vm, namespace: foo, annotations: {{alpha.istio.io/kubernetes-serviceaccounts: foo}}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: istio.foo, namespace: foo}}\ntype: istio.io/key-and-cert\ndata: {{cert-chain.pem: {}, root-cert.pem: {}}}\n",
            b64(&sample("workload-foo-cert.pem")),
            b64(root)
        )
    }

    fn legacy_bundle(f: Fixture, path: &str) -> Fixture {
        let files: Vec<(&str, Vec<u8>, u32)> = vec![
            ("root-cert.pem", sample("root-cert.pem"), 0o644),
            ("cert-chain.pem", sample("workload-foo-cert.pem"), 0o644),
            ("key.pem", sample("workload-foo-key.pem"), 0o600),
            ("cluster.env", b"ISTIO_NAMESPACE=foo\n".to_vec(), 0o644),
        ];
        let refs: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(n, d, m)| (*n, d.as_slice(), *m))
            .collect();
        f.bundle_at(path, &refs)
    }

    #[test]
    fn legacy_secret_and_bundle_certificate() {
        let not_after = leaf_not_after(&sample("workload-foo-cert.pem")).unwrap();
        let root = sample("root-cert.pem");
        let cluster = || Fixture::legacy().with(&legacy_cluster(&root)).live();
        let day = 86_400;
        let cases = [
            ("healthy", cluster().now(not_after - 400 * day), Pass),
            (
                "near expiry",
                cluster().now(not_after - 3 * day - 4 * 3600 - 5),
                Warn,
            ),
            ("expired", cluster().now(not_after + 60), Fail),
            (
                "bundle healthy",
                legacy_bundle(cluster(), "vm1").now(not_after - 400 * day),
                Pass,
            ),
            (
                "bundle near expiry, 7-day window",
                legacy_bundle(cluster(), "vm1")
                    .expiry_warning_days(7)
                    .now(not_after - 5 * day),
                Warn,
            ),
            (
                "bundle outside a 7-day window",
                legacy_bundle(cluster(), "vm1")
                    .expiry_warning_days(7)
                    .now(not_after - 8 * day),
                Pass,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&VmCredentialExpiry), severity, case);
        }
        let out = cluster()
            .now(not_after - 3 * day - 4 * 3600 - 5)
            .run(&VmCredentialExpiry);
        assert!(out[0].message.contains("expires in 3d 4h"), "{out:#?}");
        assert_eq!(out[0].object, "Secret foo/istio.foo");
        assert!(
            out[0]
                .hint
                .contains("`kubectl -n istio-system rollout restart deployment/istio-citadel`"),
            "{out:#?}"
        );
        let out = legacy_bundle(cluster(), "/srv/vm1.tar.gz")
            .now(not_after + 60)
            .run(&VmCredentialExpiry);
        let on_bundle = out
            .iter()
            .find(|f| f.object == "Bundle /srv/vm1.tar.gz")
            .unwrap();
        assert_eq!(on_bundle.severity, Fail);
        assert!(
            on_bundle.message.contains("expired 1m ago"),
            "{on_bundle:#?}"
        );
        assert!(
            on_bundle.hint.contains("`kubectl meshvm bundle --renew -n foo -d /srv/vm1 --archive /srv/vm1.tar.gz`, then on the VM: `sudo ./install.sh --renew`"),
            "{on_bundle:#?}"
        );
        let healthy = cluster()
            .now(not_after - 400 * day)
            .run(&VmCredentialExpiry);
        assert!(healthy[0].message.contains("expires in 4"), "{healthy:#?}");
    }

    #[test]
    fn legacy_root_changed() {
        let not_after = leaf_not_after(&sample("workload-foo-cert.pem")).unwrap();
        let now = not_after - 400 * 86_400;
        let same = legacy_bundle(
            Fixture::legacy()
                .with(&legacy_cluster(&sample("root-cert.pem")))
                .live(),
            "vm1",
        )
        .now(now);
        expect(&same.run(&VmCredentialExpiry), Pass, "same root");
        let changed = legacy_bundle(
            Fixture::legacy()
                .with(&legacy_cluster(&sample("ca-cert.pem")))
                .live(),
            "vm1",
        )
        .now(now);
        let out = changed.run(&VmCredentialExpiry);
        expect(&out, Fail, "Citadel now signs under another root");
        let f = out.iter().find(|f| f.severity == Fail).unwrap();
        assert!(
            f.message.contains(
                "not the root the cluster signs with today (read from Secret foo/istio.foo)"
            ),
            "{f:#?}"
        );
        assert!(
            f.hint
                .contains("`kubectl meshvm bundle --renew -n foo -d vm1`"),
            "{f:#?}"
        );
    }

    fn modern_bundle(f: Fixture, token: &[u8], root: &[u8]) -> Fixture {
        let files: Vec<(&str, &[u8], u32)> = vec![
            ("istio-token", token, 0o600),
            ("root-cert.pem", root, 0o644),
            (
                "cluster.env",
                b"ISTIO_NAMESPACE='vm'\nSERVICE_ACCOUNT='vm'\n",
                0o644,
            ),
            (
                "mesh.yaml",
                b"defaultConfig:\n  discoveryAddress: istiod.mesh.svc:15012\n",
                0o644,
            ),
        ];
        f.bundle_at("out/vm", &files)
    }

    #[test]
    fn modern_token_and_root() {
        let root = sample("root-cert.pem");
        let cm = |pem: &[u8]| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert", "namespace": "vm"}, "data": {"root-cert.pem": String::from_utf8_lossy(pem)}}).to_string()
        };
        let cases = [
            (
                "token valid, far",
                modern_bundle(
                    Fixture::modern().expiry_warning_days(0),
                    &jwt(NOW + 3600),
                    &root,
                ),
                Pass,
            ),
            (
                "token valid, in window",
                modern_bundle(Fixture::modern(), &jwt(NOW + 3600), &root),
                Warn,
            ),
            (
                "token expired",
                modern_bundle(Fixture::modern(), &jwt(NOW - 1), &root),
                Fail,
            ),
            (
                "same root",
                modern_bundle(
                    Fixture::modern().expiry_warning_days(0).with(&cm(&root)),
                    &jwt(NOW + 3600),
                    &root,
                ),
                Pass,
            ),
            (
                "root changed",
                modern_bundle(
                    Fixture::modern()
                        .expiry_warning_days(0)
                        .with(&cm(&sample("ca-cert.pem"))),
                    &jwt(NOW + 3600),
                    &root,
                ),
                Fail,
            ),
        ];
        for (case, fixture, severity) in cases {
            let out = fixture.run(&VmCredentialExpiry);
            expect(&out, severity, case);
            for f in &out {
                assert!(
                    !format!("{f:?}").contains("c2VjcmV0LXNpZ25hdHVyZQ"),
                    "{case}: the token is never shown"
                );
            }
        }
        let out = modern_bundle(Fixture::modern(), &jwt(NOW - 1), &root).run(&VmCredentialExpiry);
        assert!(
            out[0].message.contains("istio-token expired 1s ago"),
            "{out:#?}"
        );
        assert!(
            out[0].hint.contains("`kubectl meshvm bundle --renew -n vm --istio-namespace mesh -d out/vm`, then on the VM: `sudo ./install.sh --renew`"),
            "{out:#?}"
        );
        let out = modern_bundle(
            Fixture::modern().expiry_warning_days(0),
            &jwt(NOW + 3 * 86_400 + 4 * 3600),
            &root,
        )
        .run(&VmCredentialExpiry);
        assert!(
            out[0].message.contains("istio-token expires in 3d 4h"),
            "{out:#?}"
        );
    }

    #[test]
    fn auto_registered_workload_entries() {
        let we = |meta: &str, status: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: vm-10.0.0.5, namespace: vm, annotations: {{istio.io/autoRegistrationGroup: vm{meta}}}}}\nspec: {{address: 10.0.0.5}}\n{status}"
            )
        };
        let cases = [
            ("connected", Fixture::modern().with(&we("", "")), Pass),
            ("disconnected", Fixture::modern().with(&we(", istio.io/disconnectedAt: '2025-12-31T22:00:00.5Z'", "")), Warn),
            ("unhealthy", Fixture::modern().with(&we("", "status: {conditions: [{type: Healthy, status: 'False', lastTransitionTime: '2025-12-30T00:00:00Z', message: 'probe failed'}]}\n")), Warn),
            ("healthy", Fixture::modern().with(&we("", "status: {conditions: [{type: Healthy, status: 'True'}]}\n")), Pass),
            ("nothing to judge", Fixture::modern(), Pass),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&VmCredentialExpiry), severity, case);
        }
        let out = Fixture::modern()
            .with(&we(
                ", istio.io/disconnectedAt: '2025-12-31T22:00:00.5Z'",
                "",
            ))
            .run(&VmCredentialExpiry);
        assert!(
            out[0]
                .message
                .contains("disconnected from istiod 2h 0m ago"),
            "{out:#?}"
        );
        let out = Fixture::modern().with(&we("", "status: {conditions: [{type: Healthy, status: 'False', lastTransitionTime: '2025-12-30T00:00:00Z', message: 'probe failed'}]}\n")).run(&VmCredentialExpiry);
        assert!(
            out[0].message.contains("unhealthy for 2d 0h: probe failed"),
            "{out:#?}"
        );
    }
}
