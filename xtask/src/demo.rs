//! The runbook's flow on kube-sim, through the real `kubectl` and the plugin binaries.

use std::path::Path;
use std::process::Command;

use crate::{build_plugins, run_capture, workspace_root};

/// The VM's address in the demo (TEST-NET-3: never routed).
const VM_IP: &str = "203.0.113.10";

/// What a step's exit status must be for the demo to go on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Success,
    /// doctor before the runbook's Gotcha rules: it must find the failures (exit 1).
    Findings,
}

struct Step {
    what: &'static str,
    args: Vec<String>,
    expect: Expect,
}

fn step(what: &'static str, args: &[&str], expect: Expect) -> Step {
    Step {
        what,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        expect,
    }
}

/// Run the demo; `args` may hold `--keep` to leave the sim running until Enter is pressed.
pub fn run(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let bin = build_plugins(&root)?;
    let out = root.join("demo-out");
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let scenario_path = root.join("tests/scenarios/legacy-1.4.yaml");
    let scenario = kube_sim::Scenario::from_files(std::slice::from_ref(&scenario_path))
        .map_err(|e| format!("{}: {e}", scenario_path.display()))?;
    let server = runtime
        .block_on(kube_sim::Server::try_start(
            scenario,
            kube_sim::ServerOptions::default(),
        ))
        .map_err(|e| format!("cannot start kube-sim: {e}"))?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    println!(
        "kube-sim serves the runbook's cluster (Istio 1.4, {}) at {}\n",
        scenario_path.display(),
        server.url()
    );

    let ca_dir = root.join("tests/fixtures/istio-samples");
    let bundle_dir = out.join("expandvm");
    let archive = out.join("expandvm.tar.gz");
    let ca = path(&ca_dir);
    // Run twice: the second run must change nothing.
    let prepare = [
        "meshvm",
        "prepare",
        "--vm-namespace",
        "expandvm",
        "--ca-dir",
        &ca,
    ];
    let steps = [
        step(
            "prepare: cacerts from Istio's sample CA, namespace and ServiceAccount expandvm",
            &prepare,
            Expect::Success,
        ),
        step(
            "prepare again: nothing to change",
            &prepare,
            Expect::Success,
        ),
        step(
            "bundle: certificates, cluster.env, hosts, install.sh, and a deterministic archive",
            &[
                "meshvm",
                "bundle",
                "--vm-namespace",
                "expandvm",
                "-d",
                &path(&bundle_dir),
                "--archive",
                &path(&archive),
                "--inbound-ports",
                "80",
            ],
            Expect::Success,
        ),
        step(
            "register: the VM as an endpoint of Service expandvm (istioctl register, done right)",
            &[
                "meshvm", "register", "expandvm", VM_IP, "80", "-n", "expandvm", "-s", "expandvm",
            ],
            Expect::Success,
        ),
        step(
            "doctor: before STRICT — the runbook's Gotchas are still missing",
            &["meshvm", "doctor"],
            Expect::Findings,
        ),
        step(
            "doctor --fix: the runbook's two Gotcha DestinationRules, and the api-server rule Istio pairs with the mesh-wide one",
            &["meshvm", "doctor", "--fix", "--yes"],
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
                &path(&archive),
            ],
            Expect::Success,
        ),
    ];

    let path_env = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .map_err(|e| format!("cannot build PATH: {e}"))?;
    let mut missing = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        println!("── {}. {}", i + 1, s.what);
        println!("$ kubectl {}", s.args.join(" "));
        let output = run_capture(
            Command::new("kubectl")
                .args(&s.args)
                .env("KUBECONFIG", &kubeconfig)
                .env("PATH", &path_env)
                .env("NO_COLOR", "1"),
        )?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        print!("{stdout}");
        eprint!("{stderr}");
        if stderr.contains("not implemented yet") {
            println!("   (this step has not landed yet)\n");
            missing.push(s.what);
            continue;
        }
        let code = output.status.code();
        let ok = match s.expect {
            Expect::Success => code == Some(0),
            Expect::Findings => code == Some(1),
        };
        if !ok {
            return Err(format!(
                "step {} ({}) exited {code:?}, which the demo did not expect",
                i + 1,
                s.what
            ));
        }
        println!();
    }

    if missing.is_empty() {
        if !archive.is_file() {
            return Err(format!(
                "the bundle archive {} is missing",
                archive.display()
            ));
        }
        println!(
            "done: doctor passes, and the VM's bundle is at {}",
            archive.display()
        );
    } else {
        println!(
            "{} of {} steps exist today; not yet: {}",
            steps.len() - missing.len(),
            steps.len(),
            missing.join("; ")
        );
    }
    if args.iter().any(|a| a == "--keep") {
        println!(
            "\nkube-sim keeps serving: KUBECONFIG={} kubectl get ns — press Enter to stop",
            kubeconfig.display()
        );
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    drop(server);
    Ok(())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
