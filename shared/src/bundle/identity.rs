//! Legacy era: is the `istio.<sa>` secret Citadel wrote issued under the root the cluster's CA
//! holds *now*? Pure; the waiting lives in [`super::observe`].
//!
//! Citadel 1.4 reads its CA once, at start: `runCA` calls `createCA` a single time, which loads
//! the plugged-in files mounted from the `cacerts` secret (istio/istio@1.4.2
//! `security/cmd/istio_ca/main.go:347,451-484`; the files come from
//! `install/kubernetes/helm/istio/charts/security/templates/deployment.yaml:58-64,105-111`).
//! It writes `istio.<sa>` asynchronously, from its ServiceAccount informer
//! (`security/pkg/k8s/controller/workloadsecret.go:225,317-360`), and re-issues a secret whose
//! root differs from the one it holds (`workloadsecret.go:491-531`). So right after `prepare`
//! writes a new `cacerts`, the secret may be missing, or issued under the old root until Citadel
//! restarts. With `--self-signed-ca=true` Citadel ignores `cacerts` altogether (main.go:455-474).

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::pki::{self, CertFindingKind, PemInput, RootIdentity, WorkloadMaterial};

/// What the cluster's CA holds, as far as bundle could read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentRoot<'a> {
    /// `root-cert.pem` of `cacerts`, which Citadel loads when it (re)starts.
    Cacerts(&'a [u8]),
    /// No `cacerts`: Citadel's self-signed root, whichever the secret carries.
    SelfSigned,
}

/// How the identity stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Usable as far as roots go (the full check is the plan's).
    Ready,
    /// The secret does not exist (yet).
    Missing,
    /// Issued under another root than the one in `cacerts`.
    OldRoot {
        /// The secret's `root-cert.pem`, as shown to the operator.
        issued_under: String,
        /// The root in `cacerts`.
        current: String,
    },
}

impl State {
    /// Short words for the spinner.
    pub fn waiting_for(&self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Missing => "the secret to be issued",
            State::OldRoot { .. } => "certificates from the root in cacerts",
        }
    }
}

fn show(roots: Result<Vec<RootIdentity>, pki::PkiError>) -> String {
    match roots {
        Ok(roots) => roots
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" + "),
        Err(e) => format!("an unreadable root ({e})"),
    }
}

/// Judge the secret's data against the root the CA holds. Pure.
pub fn judge(
    identity: Option<&BTreeMap<String, Vec<u8>>>,
    current: CurrentRoot<'_>,
    secret: &str,
    now: SystemTime,
) -> State {
    let Some(data) = identity else {
        return State::Missing;
    };
    let CurrentRoot::Cacerts(root) = current else {
        return State::Ready;
    };
    let secret_root = data
        .get(pki::ROOT_CERT)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // The VM trusts the secret's root-cert.pem: it must hold the CA's root …
    let carries_root = pki::compare_roots(secret_root, root).is_ok_and(|c| c.overlap());
    // … and the workload certificate must verify up to it.
    let chains = match (data.get(pki::CERT_CHAIN), data.get(pki::KEY)) {
        (Some(chain), Some(key)) => {
            let material = WorkloadMaterial {
                root_cert: PemInput::new("cacerts root-cert.pem", root.to_vec()),
                cert_chain: PemInput::new(format!("secret {secret} cert-chain.pem"), chain.clone()),
                key: PemInput::new(format!("secret {secret} key.pem"), key.clone()),
            };
            !pki::check_workload(&material, None, now, pki::DEFAULT_WARN_WITHIN)
                .iter()
                .any(|f| f.kind == CertFindingKind::ChainBroken)
        }
        // A partial secret is the plan's to report.
        _ => true,
    };
    if carries_root && chains {
        return State::Ready;
    }
    State::OldRoot {
        issued_under: show(pki::root_identities(secret_root)),
        current: show(pki::root_identities(root)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testutil::{KeyKind, Spec, TestCa, now};

    fn issued(ca: &TestCa) -> BTreeMap<String, Vec<u8>> {
        let leaf = ca.leaf(KeyKind::P256, "expandvm", "expandvm");
        BTreeMap::from([
            ("root-cert.pem".into(), ca.cert_pem.clone().into_bytes()),
            ("cert-chain.pem".into(), leaf.cert_pem.into_bytes()),
            ("key.pem".into(), leaf.key_pem.into_bytes()),
        ])
    }

    #[test]
    fn missing_old_root_and_ready() {
        let old = TestCa::flat(KeyKind::P256, "Old Root");
        let new = TestCa::flat(KeyKind::P256, "New Root");
        let secret = "expandvm/istio.expandvm";
        assert_eq!(
            judge(None, CurrentRoot::SelfSigned, secret, now()),
            State::Missing
        );
        let id = issued(&old);
        // No cacerts: Citadel's self-signed root is accepted, as before.
        assert_eq!(
            judge(Some(&id), CurrentRoot::SelfSigned, secret, now()),
            State::Ready
        );
        assert_eq!(
            judge(
                Some(&id),
                CurrentRoot::Cacerts(old.cert_pem.as_bytes()),
                secret,
                now()
            ),
            State::Ready
        );
        let State::OldRoot {
            issued_under,
            current,
        } = judge(
            Some(&id),
            CurrentRoot::Cacerts(new.cert_pem.as_bytes()),
            secret,
            now(),
        )
        else {
            panic!("issued under the old root")
        };
        assert!(
            issued_under.starts_with("CN=Old Root") && issued_under.contains("SHA-256"),
            "{issued_under}"
        );
        assert!(current.starts_with("CN=New Root"), "{current}");
        // A secret that names the new root but carries a certificate of the old one.
        let mut mixed = issued(&old);
        mixed.insert("root-cert.pem".into(), new.cert_pem.clone().into_bytes());
        assert!(matches!(
            judge(
                Some(&mixed),
                CurrentRoot::Cacerts(new.cert_pem.as_bytes()),
                secret,
                now()
            ),
            State::OldRoot { .. }
        ));
        // Issued under the new root through an intermediate (Istio's samples shape).
        let root = TestCa::flat(KeyKind::P256, "Mesh Root");
        let intermediate = Spec::ca("Cluster CA", KeyKind::P256).signed_by(&root);
        let leaf = intermediate.leaf(KeyKind::P256, "expandvm", "expandvm");
        let chained = BTreeMap::from([
            ("root-cert.pem".into(), root.cert_pem.clone().into_bytes()),
            (
                "cert-chain.pem".into(),
                format!("{}{}", leaf.cert_pem, intermediate.cert_pem).into_bytes(),
            ),
            ("key.pem".into(), leaf.key_pem.into_bytes()),
        ]);
        assert_eq!(
            judge(
                Some(&chained),
                CurrentRoot::Cacerts(root.cert_pem.as_bytes()),
                secret,
                now()
            ),
            State::Ready
        );
    }
}
