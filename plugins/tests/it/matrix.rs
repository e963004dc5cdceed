//! The version matrix: the runbook's whole flow (a cluster Service → prepare --expose it → prepare
//! again → bundle → register → doctor → doctor --fix → doctor with the bundle) on every supported
//! (Istio, Kubernetes) cell,
//! through the real `kubectl` the cell's version dispatches to, against kube-sim serving that
//! Kubernetes version. README's support table is this list.

use std::path::{Path, PathBuf};

use kube_sim::{Scenario, Server};
use xtask::flow::{self, CELLS, Cell, Era};

use crate::common::sim;

fn bin_dir() -> PathBuf {
    Path::new(sim::PREPARE).parent().unwrap().to_path_buf()
}

/// Run the flow on one cell; the bundle's facts the cell must show are checked after it.
async fn run_cell(cell: Cell) -> Result<String, String> {
    let Some(kubectl) = kube_sim::testenv::require_kubectl() else {
        return Ok(String::new()); // only with MESHVM_ALLOW_MISSING_TOOLS=1, which printed why
    };
    let scenario = Scenario::from_files(&[sim::repo().join("tests/scenarios").join(cell.scenario)])
        .map_err(|e| format!("{}: {e}", cell.scenario))?
        .with_kube_version(cell.kube);
    let server = Server::start(scenario).await;
    let out = tempfile::tempdir().unwrap();
    let paths = flow::Paths::new(&sim::repo(), out.path());
    let steps = flow::steps(cell.era, &paths);
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    let mut transcript = String::new();
    let result = tokio::task::spawn_blocking(move || {
        flow::run(&kubectl, &bin_dir(), &kubeconfig, &steps, |_, _| {})
    })
    .await
    .unwrap();
    let ran = result.map_err(|e| format!("{cell:?}: {e}"))?;
    for r in &ran {
        transcript.push_str(&r.transcript());
    }
    let file = |name: &str| std::fs::read_to_string(paths.bundle_dir.join(name));
    match cell.era {
        Era::Legacy => {
            let env = file("cluster.env").map_err(|e| format!("{cell:?}: cluster.env: {e}"))?;
            if !env.lines().any(|l| l == "ISTIO_SERVICE_CIDR=172.16.0.0/16") {
                return Err(format!(
                    "{cell:?}: ISTIO_SERVICE_CIDR is not the cluster's 172.16.0.0/16:\n{env}\n{transcript}"
                ));
            }
            // prepare --expose httpbin.bar: the VM resolves it through the bundle's hosts.
            let hosts = file("hosts").map_err(|e| format!("{cell:?}: hosts: {e}"))?;
            let global = hosts.lines().find_map(|l| {
                let (ip, name) = l.split_once(' ')?;
                let ip: std::net::Ipv4Addr = ip.parse().ok()?;
                (name == flow::EXPOSED_GLOBAL_HOST && ip.octets()[..2] == [127, 255]).then_some(ip)
            });
            if global.is_none() {
                return Err(format!(
                    "{cell:?}: the bundle's hosts has no `127.255.x.y {}` line:\n{hosts}\n{transcript}",
                    flow::EXPOSED_GLOBAL_HOST
                ));
            }
            let root = file("root-cert.pem").map_err(|e| format!("{cell:?}: {e}"))?;
            let plugged = std::fs::read_to_string(paths.ca_dir.join("root-cert.pem")).unwrap();
            if root.trim() != plugged.trim() {
                return Err(format!(
                    "{cell:?}: the bundle's root-cert.pem is not the plugged-in root (Citadel still on its old CA?)\n{transcript}"
                ));
            }
        }
        Era::Modern => {
            // prepare --expose checked the east-west path; the VM's DNS proxy resolves the
            // Service by its cluster name, so no .global line, and DNS capture stays on.
            let env = file("cluster.env").map_err(|e| format!("{cell:?}: cluster.env: {e}"))?;
            if !env.lines().any(|l| l == "ISTIO_META_DNS_CAPTURE='true'") {
                return Err(format!(
                    "{cell:?}: cluster.env lacks ISTIO_META_DNS_CAPTURE='true':\n{env}\n{transcript}"
                ));
            }
            if file("istio-token").is_err() {
                return Err(format!(
                    "{cell:?}: the bundle has no istio-token\n{transcript}"
                ));
            }
        }
    }
    drop(server);
    Ok(transcript)
}

/// One test per cell, so each cell passes or fails on its own (and nextest runs them in parallel).
macro_rules! cells {
    ($($name:ident => $index:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let cell = CELLS[$index];
            if let Err(e) = run_cell(cell).await {
                panic!("{e}");
            }
        }
    )*
        /// Every cell of `CELLS` has its test above.
        #[test]
        fn every_cell_has_a_test() {
            let tested = [$($index),*];
            assert_eq!(tested.len(), CELLS.len());
            for i in 0..CELLS.len() {
                assert!(tested.contains(&i), "cell {:?} has no test", CELLS[i]);
            }
        }
    };
}

cells! {
    legacy_1_4_on_kubernetes_1_14 => 0,
    legacy_1_4_on_kubernetes_1_16 => 1,
    legacy_1_4_helm_on_kubernetes_1_16 => 2,
    modern_1_8_on_kubernetes_1_19 => 3,
    modern_1_12_on_kubernetes_1_22 => 4,
    modern_1_13_on_kubernetes_1_23 => 5,
    modern_1_22_on_kubernetes_1_28 => 6,
    modern_current_on_kubernetes_1_33 => 7,
}
