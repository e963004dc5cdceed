//! `kubectl meshvm doctor`: pre-flight checks before STRICT mTLS.
//!
//! `Snapshot` → every check in [`checks::ALL`] → [`report::Report`]. Checks are pure: they read
//! a [`Snapshot`] and a [`CheckContext`] (era, auto mTLS, the resolved mesh model) and return
//! findings; IO lives in [`crate::snapshot`] and in the report writer.

pub mod checks;
pub mod fix;
pub mod mesh;
pub mod report;
#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::istio::Era;
use crate::snapshot::{Obj, Origin, Snapshot};

pub use report::Report;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing to report.
    Pass,
    /// The check could not run from this source.
    Skip,
    /// Probably harmless, worth a look.
    Warn,
    /// STRICT (or the VM) will break.
    Fail,
}

impl Severity {
    /// The lowercase name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Pass => "pass",
            Severity::Skip => "skip",
            Severity::Warn => "warn",
            Severity::Fail => "fail",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check's stable id, e.g. `mtls.default-dr`.
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// `Kind ns/name` of the object concerned, or empty.
    pub object: String,
    /// What was found.
    pub message: String,
    /// What to do about it (may be a suggested patch); empty when nothing to do.
    pub hint: String,
    /// Where the object came from, for SARIF.
    pub origin: Option<Origin>,
    /// The kubeconfig context, when several clusters are checked.
    pub context: Option<String>,
}

impl Finding {
    /// A finding with no object.
    pub fn new(check: &'static str, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            check,
            severity,
            object: String::new(),
            message: message.into(),
            hint: String::new(),
            origin: None,
            context: None,
        }
    }
    /// The one `pass` a check emits when it has nothing to report.
    pub fn pass(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Pass, message)
    }
    /// A `skip`: the source cannot answer.
    pub fn skip(check: &'static str, reason: impl Into<String>) -> Self {
        Self::new(check, Severity::Skip, reason)
    }
    /// A `warn`.
    pub fn warn(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Warn, message)
    }
    /// A `fail`.
    pub fn fail(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Fail, message)
    }
    /// Name the object (and remember where it came from).
    #[must_use]
    pub fn on(mut self, obj: &Obj) -> Self {
        self.object = obj.reference();
        self.origin.clone_from(&obj.origin);
        self
    }
    /// Name an object that is not in the snapshot (e.g. a missing one).
    #[must_use]
    pub fn object(mut self, reference: impl Into<String>) -> Self {
        self.object = reference.into();
        self
    }
    /// Add a hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

/// What every check may read besides the snapshot.
pub struct CheckContext<'a> {
    /// The era (`None`: unknown).
    pub era: Option<Era>,
    /// Auto mTLS in effect.
    pub auto_mtls: bool,
    /// Where auto mTLS came from, for messages.
    pub auto_mtls_source: &'static str,
    /// The Istio namespace.
    pub istio_ns: String,
    /// The root namespace (mesh-wide rules live here).
    pub root_ns: String,
    /// Now, in seconds since the epoch (injected so tests are stable).
    pub now: i64,
    /// Certificates expiring within this many seconds warn.
    pub expiry_warn_secs: i64,
    /// The other clusters of a multi-`--context` run, for cross-cluster checks.
    pub others: Vec<&'a Snapshot>,
    /// The mesh model (DestinationRule index, destinations, peer authentication).
    pub mesh: mesh::Mesh<'a>,
}

/// Settings from the command line that change how checks judge.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// `--auto-mtls=true|false`.
    pub auto_mtls: Option<bool>,
    /// Override "now" (seconds since the epoch); tests pin it.
    pub now: Option<i64>,
    /// `--istio-namespace`, when it differs from what the snapshot shows.
    pub istio_namespace: Option<String>,
    /// `--expiry-warning-days` (default 30).
    pub expiry_warning_days: Option<u32>,
}

impl<'a> CheckContext<'a> {
    /// Resolve the context of one snapshot.
    pub fn new(snap: &'a Snapshot, opts: &CheckOptions, others: Vec<&'a Snapshot>) -> Self {
        let era = snap.era().or_else(|| snap.bundle.as_ref().and_then(|b| b.era()));
        let configured = snap.auto_mtls_configured();
        let (auto_mtls, auto_mtls_source) = match (opts.auto_mtls, configured) {
            (Some(v), _) => (v, "--auto-mtls"),
            (None, Some(v)) => (v, "the mesh config's enableAutoMtls"),
            (None, None) => match era {
                Some(Era::Modern) => (true, "the modern era's default"),
                Some(Era::Legacy) => (false, "the legacy era's default"),
                None => (false, "the default for an unknown era"),
            },
        };
        let now = opts.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let istio_ns = opts
            .istio_namespace
            .clone()
            .unwrap_or_else(|| snap.istio_namespace().to_string());
        let root_ns = snap
            .mesh_config()
            .and_then(|m| m.get("rootNamespace").and_then(serde_json::Value::as_str).map(str::to_string))
            .unwrap_or_else(|| istio_ns.clone());
        let mesh = mesh::Mesh::new(snap, &root_ns, &istio_ns, era);
        Self {
            era,
            auto_mtls,
            auto_mtls_source,
            istio_ns,
            root_ns,
            now,
            expiry_warn_secs: i64::from(opts.expiry_warning_days.unwrap_or(30)) * 24 * 3600,
            others,
            mesh,
        }
    }
}

/// One doctor check.
pub trait Check: Sync {
    /// The stable id (`mtls.default-dr`).
    fn id(&self) -> &'static str;
    /// One line saying what the check looks at (SARIF rule description, `--help`).
    fn describe(&self) -> &'static str;
    /// Run over one snapshot.
    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding>;
}

/// Run every check over every snapshot (one per `--context`, or the single source).
pub fn run_all(snaps: &[Snapshot], opts: &CheckOptions) -> Report {
    let mut findings = Vec::new();
    let mut era = None;
    let mut auto_mtls = false;
    for (i, snap) in snaps.iter().enumerate() {
        let others = snaps
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s)
            .collect();
        let ctx = CheckContext::new(snap, opts, others);
        if i == 0 {
            era = ctx.era;
            auto_mtls = ctx.auto_mtls;
        }
        for check in checks::ALL {
            for mut f in check.run(snap, &ctx) {
                if snaps.len() > 1 {
                    f.context.clone_from(&snap.context);
                }
                findings.push(f);
            }
        }
    }
    Report {
        era,
        auto_mtls,
        findings,
    }
}
