//! `doctor --fix` against kube-sim: `--dry-run=client|server` persist nothing, and the real run
//! creates (never changes) the runbook's rules.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use kube_sim::{Scenario, Server};

fn scenario(name: &str) -> Scenario {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(name);
    Scenario::from_files(&[path]).expect("scenario")
}

fn options(server: &Server, extra: &[&str]) -> Result<meshvm::doctor::DoctorOptions, String> {
    let kubeconfig = server.kubeconfig_path().display().to_string();
    let mut argv = vec!["kubectl-meshvm-doctor", "--kubeconfig", kubeconfig.as_str()];
    argv.extend_from_slice(extra);
    let args = meshvm::args::DoctorArgs::try_parse_from(argv).map_err(|e| e.to_string())?;
    meshvm::doctor::DoctorOptions::resolve(args).map_err(|e| e.to_string())
}

async fn doctor(server: &Server, extra: &[&str]) -> String {
    let opts = options(server, extra).expect("flags valid");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    meshvm::doctor::run(&opts, &mut out, &mut err, false)
        .await
        .expect("doctor ran");
    String::from_utf8(err).unwrap()
}

/// Writes (not reads) the sim saw: `(method, path, query)`.
pub(crate) fn writes(server: &Server) -> Vec<(String, String, String)> {
    server
        .requests()
        .records
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method.clone(), r.path.clone(), r.query.clone()))
        .collect()
}

fn citadel_rule(server: &Server) -> Option<serde_json::Value> {
    server.object(
        "networking.istio.io/v1alpha3",
        "DestinationRule",
        "istio-system",
        "meshexpansion-dr-citadel",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_dry_run_client_sends_nothing_and_server_stores_nothing() {
    for kube in ["1.14", "1.16"] {
        let server = Server::start(scenario("legacy-1.4.yaml").with_kube_version(kube)).await;
        let count = server.object_count();

        // client: not one write request; the table says what would be created.
        for flag in ["--dry-run=client", "--dry-run"] {
            server.reset_requests();
            let err = doctor(&server, &["--fix", flag]).await;
            assert!(
                writes(&server).is_empty(),
                "{kube} {flag}: {:?}",
                writes(&server)
            );
            assert!(err.contains("--fix (dry run): nothing was sent"), "{err}");
            assert!(
                err.lines()
                    .any(|l| l.contains("meshexpansion-dr-citadel") && l.contains("would create")),
                "{err}"
            );
        }

        // server: every write carries dryRun=All, is accepted, and nothing is stored.
        server.reset_requests();
        let err = doctor(&server, &["--fix", "--dry-run=server"]).await;
        let sent = writes(&server);
        assert!(!sent.is_empty(), "{kube}: the creates were sent");
        for (method, path, query) in &sent {
            assert!(
                query.contains("dryRun=All"),
                "{kube}: {method} {path}?{query}"
            );
        }
        assert!(
            sent.iter()
                .any(|(m, p, _)| m == "POST" && p.ends_with("/destinationrules")),
            "{kube}: sent as creates: {sent:?}"
        );
        assert!(
            err.contains("--fix (dry run): the API server validated"),
            "{err}"
        );
        assert!(
            err.lines().any(|l| l.contains("meshexpansion-dr-citadel")
                && l.contains("created (server dry run)")),
            "{err}"
        );
        assert_eq!(server.object_count(), count, "{kube}: nothing stored");
        assert!(citadel_rule(&server).is_none(), "{kube}");

        // The real run creates them; a dry run afterwards has nothing left to do.
        let err = doctor(&server, &["--fix", "--yes"]).await;
        assert!(citadel_rule(&server).is_some(), "{kube}: {err}");
        let err = doctor(&server, &["--fix", "--dry-run=server"]).await;
        assert!(err.contains("nothing to apply"), "{kube}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_without_fix_is_a_usage_error() {
    let server = Server::start(scenario("legacy-1.4.yaml")).await;
    let error = options(&server, &["--dry-run=server"]).unwrap_err();
    assert!(error.contains("--dry-run goes with --fix"), "{error}");
}

/// A rule that appeared between doctor's read and its write is never changed: `--fix` creates,
/// and a differing object of that name stops the run naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_never_changes_a_rule_that_appeared_meanwhile() {
    let server = Server::start(scenario("legacy-1.4.yaml")).await;
    let snap = meshvm::snapshot::Snapshot::observe(&meshvm::kube::Connection::from_client(
        server.client(),
        "default",
        "https://kube-sim",
    ))
    .await
    .unwrap();
    let ctx =
        meshvm::doctor::CheckContext::new(&snap, &meshvm::doctor::CheckOptions::default(), vec![]);
    let planned = meshvm::doctor::fix::plan(&snap, &ctx);
    let mut theirs = planned
        .iter()
        .find(|o| o.name() == "meshexpansion-dr-citadel")
        .unwrap()
        .to_value();
    theirs["spec"]["trafficPolicy"] = serde_json::json!({"tls": {"mode": "SIMPLE"}});
    let conn =
        meshvm::kube::Connection::from_client(server.client(), "default", "https://kube-sim");
    let mut plan = meshvm::plan::Plan::default();
    plan.push(
        meshvm::plan::Change::new(
            meshvm::plan::Action::Create,
            meshvm::plan::write::Kind::DestinationRule,
            Some("istio-system"),
            "meshexpansion-dr-citadel",
        )
        .write(meshvm::plan::write::Write::create(
            meshvm::plan::write::Kind::DestinationRule,
            theirs,
        )),
    );
    meshvm::plan::write::execute(&conn, &mut plan, meshvm::flags::DryRun::None)
        .await
        .unwrap();
    let mut rows = meshvm::doctor::fix::rows(&planned);
    let failure = meshvm::plan::write::execute(&conn, &mut rows, meshvm::flags::DryRun::None)
        .await
        .unwrap_err();
    assert!(
        failure
            .error
            .to_string()
            .contains("meshexpansion-dr-citadel"),
        "{}",
        failure.error
    );
    let stored = citadel_rule(&server).unwrap();
    assert_eq!(
        stored["spec"]["trafficPolicy"]["tls"]["mode"], "SIMPLE",
        "left as it was"
    );
}
