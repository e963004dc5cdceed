//! The runbook's flow on kube-sim, through the real `kubectl` and the plugin binaries, on the
//! runbook's cluster as it really was: Istio 1.4.2 on Kubernetes 1.14.

use std::path::Path;

use xtask::flow::{self, RUNBOOK};

use crate::{build_plugins, workspace_root};

/// Run the demo; `args` may hold `--keep` to leave the sim running until Enter is pressed.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
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
    let scenario_path = root.join("tests/scenarios").join(RUNBOOK.scenario);
    let scenario = kube_sim::Scenario::from_files(std::slice::from_ref(&scenario_path))
        .map_err(|e| format!("{}: {e}", scenario_path.display()))?
        .with_kube_version(RUNBOOK.kube);
    let server = runtime
        .block_on(kube_sim::Server::try_start(
            scenario,
            kube_sim::ServerOptions::default(),
        ))
        .map_err(|e| format!("cannot start kube-sim: {e}"))?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    println!(
        "kube-sim serves the runbook's cluster — Istio {} on Kubernetes {} ({}) — at {}\n",
        RUNBOOK.istio,
        RUNBOOK.kube,
        scenario_path.display(),
        server.url()
    );

    let paths = flow::Paths::new(&root, &out);
    let steps = flow::steps(RUNBOOK.era, &paths);
    flow::run(Path::new("kubectl"), &bin, &kubeconfig, &steps, |i, ran| {
        println!("── {}. {}", i + 1, ran.step.what);
        println!("$ kubectl {}", ran.step.args.join(" "));
        print!("{}", ran.stdout);
        eprint!("{}", ran.stderr);
        println!();
    })?;
    if !paths.archive.is_file() {
        return Err(format!(
            "the bundle archive {} is missing",
            paths.archive.display()
        ));
    }
    let hosts = paths.bundle_dir.join("hosts");
    let hosts = std::fs::read_to_string(&hosts)
        .map_err(|e| format!("cannot read {}: {e}", hosts.display()))?;
    println!(
        "the VM's /etc/hosts lines (the bundle's hosts: the control plane at the gateway, and {} at its .global address):\n{hosts}",
        flow::EXPOSED
    );
    println!(
        "done: doctor passes, and the VM's bundle is at {}",
        paths.archive.display()
    );
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
