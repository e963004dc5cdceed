//! Shell completion of names from the kubeconfig and the cluster: through the real kubectl's
//! plugin-completion protocol (`kubectl __complete meshvm …`, kubectl ≥ 1.26) in krew's layout,
//! and through each `kubectl_complete-meshvm*` binary, with the connection flags on the line.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube_sim::Server;

use crate::common::sim::{legacy_with_vm, modern_with_vm};
use crate::common::{BINARIES, text};

/// krew's layout: only `kubectl-meshvm` and `kubectl_complete-meshvm` on PATH.
#[cfg(unix)]
fn krew_bin(root: &Path) -> PathBuf {
    let store = root.join("store");
    let bin = root.join("bin");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    for (name, src) in BINARIES {
        std::fs::copy(src, store.join(name)).unwrap();
    }
    for name in ["kubectl-meshvm", "kubectl_complete-meshvm"] {
        std::os::unix::fs::symlink(store.join(name), bin.join(name)).unwrap();
    }
    bin
}

/// The candidates (values only) and the directive of a `__complete` answer.
fn candidates(stdout: &str) -> (Vec<String>, String) {
    let mut values = Vec::new();
    let mut directive = String::new();
    for line in stdout.lines() {
        if let Some(d) = line.strip_prefix(':') {
            d.clone_into(&mut directive);
        } else if !line.is_empty() {
            values.push(line.split('\t').next().unwrap_or_default().to_owned());
        }
    }
    (values, directive)
}

/// Run the real kubectl (the dispatcher on PATH picks the release) with `bin` on PATH.
async fn kubectl_complete(sim: &Server, bin: &Path, words: &[&str]) -> (Vec<String>, String) {
    let kubectl = kube_sim::testenv::require_kubectl().expect("kubectl on PATH");
    let kubeconfig = sim.kubeconfig_path().to_owned();
    let mut args: Vec<String> = vec!["__complete".into(), "meshvm".into()];
    args.extend(words.iter().map(|w| (*w).to_owned()));
    let bin = bin.to_owned();
    // kubectl keeps its discovery cache under $HOME/.kube: a home of the test's own, so no
    // cache lands in the checkout or the user's home.
    let home = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let dir = kubectl.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = std::env::join_paths([bin, dir]).unwrap();
        Command::new(&kubectl)
            .args(&args)
            .env("PATH", path)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", home.path())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    candidates(&text(&out.stdout))
}

/// Run one completion binary directly, as kubectl would, with `--kubeconfig` on the line.
async fn complete_with(binary: &str, sim: &Server, words: &[&str]) -> (Vec<String>, String) {
    let exe = BINARIES
        .iter()
        .find(|(n, _)| *n == binary)
        .map(|(_, p)| *p)
        .expect("a completion binary");
    let kubeconfig = sim.kubeconfig_path().to_string_lossy().into_owned();
    // The connection flag first, as in `kubectl meshvm --kubeconfig K doctor -n <TAB>`.
    let mut args: Vec<String> = vec!["--kubeconfig".to_owned(), kubeconfig];
    args.extend(words.iter().map(|w| (*w).to_owned()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(&args)
            .env_remove("KUBECONFIG")
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    candidates(&text(&out.stdout))
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_completes_namespaces_services_and_workload_groups_from_the_cluster() {
    let sim = Server::start(modern_with_vm()).await;
    let root = tempfile::tempdir().unwrap();
    let bin = krew_bin(root.path());

    let (ns, directive) = kubectl_complete(&sim, &bin, &["doctor", "-n", ""]).await;
    assert!(ns.contains(&"vm".to_owned()), "{ns:?}");
    assert!(ns.contains(&"istio-system".to_owned()), "{ns:?}");
    assert_eq!(directive, "4", "a namespace is never a file name");

    let (ns, _) = kubectl_complete(&sim, &bin, &["prepare", "--namespace=is"]).await;
    assert_eq!(ns, ["istio-system"], "the prefix filters");

    let (groups, _) = kubectl_complete(
        &sim,
        &bin,
        &["register", "-n", "vm", "--workload-group", ""],
    )
    .await;
    assert_eq!(groups, ["vm"]);

    let (accounts, _) = kubectl_complete(&sim, &bin, &["bundle", "-n", "vm", "-s", ""]).await;
    assert!(accounts.contains(&"vm-sa".to_owned()), "{accounts:?}");

    let (gateways, _) = kubectl_complete(&sim, &bin, &["bundle", "--gateway-service", ""]).await;
    assert!(
        gateways.iter().any(|g| g.contains("eastwest")),
        "the east-west gateway's Service: {gateways:?}"
    );
    assert!(
        !gateways.iter().any(|g| g == "istiod"),
        "istiod is not a gateway: {gateways:?}"
    );

    let (contexts, _) = kubectl_complete(&sim, &bin, &["doctor", "--context", ""]).await;
    assert_eq!(contexts, ["kube-sim"]);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_offers_deregister_and_each_verb_in_its_own_words() {
    let sim = Server::start(legacy_with_vm()).await;
    let root = tempfile::tempdir().unwrap();
    let bin = krew_bin(root.path());
    let kubectl = kube_sim::testenv::require_kubectl().expect("kubectl on PATH");
    let dir = kubectl.parent().map(Path::to_path_buf).unwrap_or_default();
    let kubeconfig = sim.kubeconfig_path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&kubectl)
            .args(["__complete", "meshvm", ""])
            .env("PATH", std::env::join_paths([bin, dir]).unwrap())
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", root.path())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    for (verb, _) in meshvm::args::VERBS {
        let described = stdout.lines().find(|l| l.starts_with(&format!("{verb}\t")));
        let described = described.unwrap_or_else(|| panic!("{verb} not offered:\n{stdout}"));
        assert!(
            !described.contains("is a plugin installed by the user"),
            "{verb} is described in kubectl's words, not ours: {described}"
        );
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("deregister\t")),
        "deregister is not offered:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_completion_binary_reads_the_cluster_with_the_flags_on_the_line() {
    let sim = Server::start(legacy_with_vm()).await;
    // kubectl_complete-meshvm gets the verb; the per-verb binaries are asked without it.
    let (ns, _) = complete_with("kubectl_complete-meshvm", &sim, &["doctor", "-n", ""]).await;
    assert!(ns.contains(&"expandvm".to_owned()), "{ns:?}");
    let (ns, _) = complete_with("kubectl_complete-meshvm-prepare", &sim, &["-n", "exp"]).await;
    assert_eq!(ns, ["expandvm"]);
    // register's first word is a Service of the namespace.
    let (services, _) = complete_with(
        "kubectl_complete-meshvm-register",
        &sim,
        &["-n", "istio-system", "istio-p"],
    )
    .await;
    assert!(services.contains(&"istio-pilot".to_owned()), "{services:?}");
    let (services, _) = complete_with(
        "kubectl_complete-meshvm",
        &sim,
        &["deregister", "-n", "istio-system", "istio-pi"],
    )
    .await;
    assert!(services.contains(&"istio-pilot".to_owned()), "{services:?}");
    // A global flag before the verb still routes (the dispatcher's rule).
    let (ns, _) = complete_with(
        "kubectl_complete-meshvm",
        &sim,
        &["-n", "x", "doctor", "--istio-namespace", "istio-"],
    )
    .await;
    assert_eq!(ns, ["istio-system"]);
    // Flags still come from clap.
    let (flags, _) = complete_with("kubectl_complete-meshvm-doctor", &sim, &["--bun"]).await;
    assert_eq!(flags, ["--bundle"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_offers_nothing_quickly_and_no_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    // A server that accepts and never answers: completion must give up on its own deadline.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let exe = BINARIES
        .iter()
        .find(|(n, _)| *n == "kubectl_complete-meshvm-doctor")
        .map(|(_, p)| *p)
        .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(exe)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-n", ""])
        .output()
        .unwrap();
    drop(listener);
    let (values, directive) = candidates(&text(&out.stdout));
    assert!(values.is_empty(), "{values:?}");
    assert_eq!(directive, "4");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "completion hung for {:?}",
        started.elapsed()
    );
}
