//! The runbook's flow as data — a cluster Service for the VM to call → prepare (exposing it) →
//! prepare again → bundle → register → doctor → doctor --fix → doctor --fix --strict
//! --dry-run=client → doctor with the bundle — and the
//! version matrix it runs on. `cargo xtask demo` runs
//! it on the runbook's own cluster (Istio 1.4 on Kubernetes 1.14); the matrix test in
//! `plugins/tests/it/matrix.rs` runs it on every cell, through the real `kubectl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Istio era a cell runs, which decides the flow's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Istio 1.4: Citadel, `istio.<sa>` secrets, a Service + Endpoints per VM.
    Legacy,
    /// istiod: WorkloadGroup, token bootstrap, WorkloadEntry per VM.
    Modern,
}

/// One supported (Istio, Kubernetes) pair: a scenario of `tests/scenarios` at a Kubernetes version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The scenario file under `tests/scenarios`.
    pub scenario: &'static str,
    /// The Kubernetes version kube-sim serves (`/version`, and what that version serves).
    pub kube: &'static str,
    /// The Istio release the scenario installs, for reports.
    pub istio: &'static str,
    /// Its era.
    pub era: Era,
}

/// Every cell of the support matrix (README's table; DESIGN.md's "Supported versions").
pub const CELLS: [Cell; 8] = [
    Cell {
        scenario: "legacy-1.4.yaml",
        kube: "1.14",
        istio: "1.4.2 (istioctl manifest apply)",
        era: Era::Legacy,
    },
    Cell {
        scenario: "legacy-1.4.yaml",
        kube: "1.16",
        istio: "1.4.2 (istioctl manifest apply)",
        era: Era::Legacy,
    },
    Cell {
        scenario: "legacy-1.4-helm.yaml",
        kube: "1.16",
        istio: "1.4.2 (helm)",
        era: Era::Legacy,
    },
    Cell {
        scenario: "modern-1.8.yaml",
        kube: "1.19",
        istio: "1.8",
        era: Era::Modern,
    },
    Cell {
        scenario: "modern-1.12.yaml",
        kube: "1.22",
        istio: "1.12",
        era: Era::Modern,
    },
    Cell {
        scenario: "modern-1.13.yaml",
        kube: "1.23",
        istio: "1.13",
        era: Era::Modern,
    },
    Cell {
        scenario: "modern-1.22.yaml",
        kube: "1.28",
        istio: "1.22",
        era: Era::Modern,
    },
    Cell {
        scenario: "modern.yaml",
        kube: "1.33",
        istio: "current",
        era: Era::Modern,
    },
];

/// The runbook's cluster as it really was: Istio 1.4.2 on Kubernetes 1.14 (what the demo runs).
pub const RUNBOOK: Cell = CELLS[0];

/// The VM's address (TEST-NET-3: never routed).
pub const VM_IP: &str = "203.0.113.30";
/// The VM's namespace and ServiceAccount.
pub const VM_NAMESPACE: &str = "expandvm";
/// The cluster Service the VM calls (`prepare --expose`), as the 1.4 multi-network VM guide's
/// httpbin in namespace bar: `SVC.NS`, and its legacy `.global` host.
pub const EXPOSED: &str = "httpbin.bar";
/// The name the VM calls [`EXPOSED`] by in the legacy era (its `/etc/hosts` line).
pub const EXPOSED_GLOBAL_HOST: &str = "httpbin.bar.global";

/// What a step's exit status must be for the flow to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exit 0.
    Success,
    /// doctor before its fixes: exit 1 (it found failures).
    Findings,
    /// doctor before its fixes where the release may already pass: exit 0 or 1.
    SuccessOrFindings,
}

/// One `kubectl meshvm …` command of the flow.
#[derive(Debug, Clone)]
pub struct Step {
    /// What the step does, for the transcript.
    pub what: &'static str,
    /// The arguments after `kubectl`.
    pub args: Vec<String>,
    /// The exit status it must have.
    pub expect: Expect,
}

/// Where a flow writes: the bundle directory and archive.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Istio's sample CA (root + intermediate) the flow plugs in as `cacerts`.
    pub ca_dir: PathBuf,
    /// The bundle directory.
    pub bundle_dir: PathBuf,
    /// The bundle archive.
    pub archive: PathBuf,
    /// Where the staged STRICT rollout writes its undo.
    pub undo: PathBuf,
}

impl Paths {
    /// The flow's files under `out`, with the repository's sample CA.
    pub fn new(root: &Path, out: &Path) -> Paths {
        Paths {
            ca_dir: root.join("tests/fixtures/istio-samples"),
            bundle_dir: out.join(VM_NAMESPACE),
            archive: out.join(format!("{VM_NAMESPACE}.tar.gz")),
            undo: out.join("strict-undo.json"),
        }
    }
}

fn step(what: &'static str, args: &[&str], expect: Expect) -> Step {
    Step {
        what,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        expect,
    }
}

/// The runbook's flow for an era.
pub fn steps(era: Era, paths: &Paths) -> Vec<Step> {
    let ca = paths.ca_dir.display().to_string();
    let dir = paths.bundle_dir.display().to_string();
    let archive = paths.archive.display().to_string();
    let undo = paths.undo.display().to_string();
    let ns = VM_NAMESPACE;
    let group: &[&str] = match era {
        Era::Legacy => &[],
        Era::Modern => &["--workload-group", "vm"],
    };
    let prepare = |extra: &[&str]| {
        let mut args = vec![
            "meshvm", "prepare", "-n", ns, "--ca-dir", &ca, "--expose", EXPOSED,
        ];
        args.extend_from_slice(group);
        args.extend_from_slice(extra);
        args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    };
    let mut bundle = vec![
        "meshvm",
        "bundle",
        "-n",
        ns,
        "-d",
        &dir,
        "--archive",
        &archive,
        "--inbound-ports",
        "80",
    ];
    bundle.extend_from_slice(group);
    let register: Vec<&str> = match era {
        Era::Legacy => vec!["meshvm", "register", ns, VM_IP, "80", "-n", ns, "-s", ns],
        Era::Modern => vec![
            "meshvm",
            "register",
            "--workload-entry",
            "vm-1",
            "--address",
            VM_IP,
            "-n",
            ns,
            "--workload-group",
            "vm",
        ],
    };
    let first_doctor = match era {
        // The runbook's Gotchas: Istio 1.4's install lacks the rules STRICT needs.
        Era::Legacy => Expect::Findings,
        Era::Modern => Expect::SuccessOrFindings,
    };
    vec![
        step(
            "a cluster Service for the VM to call: namespace bar",
            &["create", "namespace", "bar"],
            Expect::Success,
        ),
        step(
            "a cluster Service for the VM to call: httpbin in bar, port 8000",
            &[
                "-n",
                "bar",
                "create",
                "service",
                "clusterip",
                "httpbin",
                "--tcp=8000:80",
            ],
            Expect::Success,
        ),
        Step {
            what: "prepare: cacerts from Istio's sample CA, the VM's namespace and ServiceAccount; restart the CA so it loads cacerts; --expose httpbin.bar (legacy: its .global ServiceEntry; modern: checks the east-west gateway)",
            args: prepare(&["--restart-control-plane", "--yes"]),
            expect: Expect::Success,
        },
        Step {
            what: "prepare again: nothing to change",
            args: prepare(&[]),
            expect: Expect::Success,
        },
        step(
            "bundle: certificates (or token), cluster.env, hosts, install.sh, and a deterministic archive",
            &bundle,
            Expect::Success,
        ),
        step(
            "register: the VM as an endpoint of the mesh",
            &register,
            Expect::Success,
        ),
        step(
            "doctor: what breaks if STRICT goes on now",
            &["meshvm", "doctor"],
            first_doctor,
        ),
        step(
            "doctor --fix: the DestinationRules STRICT needs",
            &["meshvm", "doctor", "--fix", "--yes"],
            Expect::Success,
        ),
        step(
            "doctor --fix --strict --dry-run=client: the staged STRICT rollout's plan (ready namespaces only; blocked ones listed), nothing sent",
            &["meshvm", "doctor", "--fix", "--strict", "--dry-run=client"],
            Expect::Success,
        ),
        step(
            "doctor --fix --strict --wait: STRICT for real, one ready namespace at a time, each checked again before the next, with an undo file",
            &[
                "meshvm",
                "doctor",
                "--fix",
                "--strict",
                "--wait",
                "--undo-file",
                &undo,
                "--yes",
            ],
            Expect::Success,
        ),
        step(
            "doctor --fix --undo: back to where the rollout started (only what it wrote, as it wrote it)",
            &["meshvm", "doctor", "--fix", "--undo", &undo, "--yes"],
            Expect::Success,
        ),
        step(
            "prepare --delete --expose --dry-run=client: what stopping the VM's calls to httpbin.bar would remove (legacy: its .global ServiceEntry; modern: nothing), nothing sent",
            &[
                "meshvm",
                "prepare",
                "--delete",
                "-n",
                ns,
                "--expose",
                EXPOSED,
                "--dry-run=client",
            ],
            Expect::Success,
        ),
        step(
            "doctor --context --bundle: the cluster and the VM bundle, cross-checked",
            &[
                "meshvm",
                "doctor",
                "--context",
                "kube-sim",
                "--bundle",
                &archive,
            ],
            Expect::Success,
        ),
    ]
}

/// What one step printed.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The step.
    pub step: Step,
    /// Its exit status.
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Ran {
    /// `$ kubectl …`, then stdout and stderr, as a transcript shows it.
    pub fn transcript(&self) -> String {
        format!(
            "$ kubectl {}\n{}{}(exit {:?})\n",
            self.step.args.join(" "),
            self.stdout,
            self.stderr,
            self.code
        )
    }
}

/// Run `steps` through `kubectl` (the dispatcher on PATH, or a given `kubectl.1.NN`) with the
/// plugin binaries of `bin` first on PATH, against `kubeconfig`. `each` sees every step as it
/// ends. Stops at the first step whose exit status is not the expected one.
pub fn run(
    kubectl: &Path,
    bin: &Path,
    kubeconfig: &Path,
    steps: &[Step],
    mut each: impl FnMut(usize, &Ran),
) -> Result<Vec<Ran>, String> {
    let path_env = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .map_err(|e| format!("cannot build PATH: {e}"))?;
    let mut ran = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let output: Output = Command::new(kubectl)
            .args(&s.args)
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", &path_env)
            .env("NO_COLOR", "1")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", kubectl.display()))?;
        let r = Ran {
            step: s.clone(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        each(i, &r);
        let ok = match s.expect {
            Expect::Success => r.code == Some(0),
            Expect::Findings => r.code == Some(1),
            Expect::SuccessOrFindings => matches!(r.code, Some(0 | 1)),
        };
        if !ok {
            return Err(format!(
                "step {} ({}) exited {:?}, which the flow did not expect:\n{}",
                i + 1,
                s.what,
                r.code,
                r.transcript()
            ));
        }
        ran.push(r);
    }
    Ok(ran)
}
