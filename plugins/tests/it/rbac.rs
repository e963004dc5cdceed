//! Least privilege: every verb runs as a user (`auditor`) bound only to the roles its
//! `--print-rbac` prints — applied and bound through the real kubectl as the admin — with no
//! 403; with one permission taken out it fails naming the missing right and the command that
//! prints the role (doctor: skips what it cannot read, saying so, and reports the rest).

use std::process::Command;

use kube_sim::{Scenario, Server};

use crate::common::sim::{self, Run};

const USER: &str = "auditor";

/// Real kubectl against the sim (admin unless `args` name a context), `stdin` fed.
async fn kubectl(server: &Server, args: &[&str], stdin: Option<String>) -> Run {
    let kubeconfig = server.kubeconfig_path().to_owned();
    let cache = tempfile::tempdir().unwrap();
    let mut argv = vec![
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--cache-dir".to_owned(),
        cache.path().display().to_string(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new("kubectl")
            .args(&argv)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        drop(cache);
        Run::from(&out)
    })
    .await
    .unwrap()
}

/// `<verb> --print-rbac <args>` (no cluster needed: the kubeconfig is not even read).
async fn printed(bin: &'static str, server: &Server, args: &[&str]) -> String {
    let mut argv = vec!["--print-rbac"];
    argv.extend(args);
    let run = sim::run(bin, server, &sim::args(&argv)).await;
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(run.stderr.is_empty(), "{}", run.show());
    run.stdout
}

/// The YAML without the first rule for `resource` whose verbs include `verb` (and, unless
/// `named`, that names no resources).
fn without(yaml: &str, (resource, verb, named): (&str, &str, bool)) -> String {
    let mut out = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut i = 0;
    let mut removed = false;
    while i < lines.len() {
        if lines[i].starts_with("- apiGroups:") {
            let end = (i + 1..lines.len())
                .find(|&j| !lines[j].starts_with("  "))
                .unwrap_or(lines.len());
            let rule = lines[i..end].join("\n");
            if !removed
                && rule.contains(&format!("resources: [\"{resource}\"]"))
                && rule.contains(&format!("\"{verb}\""))
                && rule.contains("resourceNames") == named
            {
                removed = true;
                i = end;
                continue;
            }
        }
        out.push(lines[i]);
        i += 1;
    }
    assert!(removed, "no rule for {verb} {resource} in\n{yaml}");
    out.join("\n") + "\n"
}

/// Apply the printed roles as the admin and bind every one to `auditor`, as the printed
/// comments say.
async fn grant(server: &Server, yaml: &str) {
    let applied = kubectl(server, &["apply", "-f", "-"], Some(yaml.to_owned())).await;
    assert_eq!(applied.code, 0, "{}\n{yaml}", applied.show());
    for doc in yaml.split("---\n").skip(1) {
        let field = |key: &str| {
            doc.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::to_owned)
        };
        let kind = field("kind: ").unwrap();
        let name = field("  name: ").unwrap();
        // As `kubectl create (cluster)rolebinding` would make it (sent as YAML: that command
        // sends protobuf, which kube-sim does not decode for bindings).
        let (binding, ns) = match field("  namespace: ") {
            Some(ns) if kind == "Role" => ("RoleBinding", format!("\n  namespace: {ns}")),
            _ => ("ClusterRoleBinding", String::new()),
        };
        let manifest = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: {binding}\nmetadata:\n  name: {name}{ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {kind}\n  name: {name}\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {USER}\n"
        );
        let bound = kubectl(server, &["apply", "-f", "-"], Some(manifest)).await;
        assert_eq!(bound.code, 0, "{}", bound.show());
    }
}

/// The auditor's requests the sim refused.
fn refused(server: &Server) -> Vec<String> {
    server
        .requests()
        .records
        .iter()
        .filter(|r| r.user == USER && r.status == 403)
        .map(|r| format!("{} {}?{}", r.verb, r.path, r.query))
        .collect()
}

/// Run a verb as the auditor.
async fn as_auditor(bin: &'static str, server: &Server, args: &[&str]) -> Run {
    let mut argv = vec!["--context", USER];
    argv.extend(args);
    sim::run(bin, server, &sim::args(&argv)).await
}

fn legacy() -> Scenario {
    sim::legacy().with_user(USER)
}

fn modern() -> Scenario {
    sim::modern().with_user(USER)
}

#[test]
fn the_printed_roles_are_yaml_kubectl_reads() {
    // Parsed as the API would: every document an RBAC object with rules.
    let text = meshvm::rbac::render(
        meshvm::rbac::Verb::Bundle,
        &meshvm::rbac::Namespaces {
            istio: "istio-system".into(),
            vm: Some("vm".into()),
        },
    );
    let docs: Vec<serde_json::Value> = text
        .split("---\n")
        .skip(1)
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    assert!(docs.len() >= 3, "{text}");
    for d in &docs {
        assert_eq!(d["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert!(d["rules"].as_array().is_some_and(|r| !r.is_empty()), "{d}");
    }
}

/// Done-when of issue 18: with doctor's printed roles bound to `auditor`, doctor reads the
/// mesh with no 403 and reports what the admin's run reports, while `kubectl get secrets -A`
/// is forbidden to it; its request log has no unfiltered cluster-wide Secret list.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_runs_on_its_printed_role_without_reading_every_secret() {
    for (era, scenario) in [("modern", modern()), ("legacy", legacy())] {
        let server = Server::start(scenario).await;
        let yaml = printed(sim::DOCTOR, &server, &[]).await;
        // Named contexts both, so findings carry the same attribution.
        let admin = sim::run(sim::DOCTOR, &server, &sim::args(&["--context", "kube-sim"])).await;
        // Modern clusters need no Secret list at all: bind only the main roles there.
        let yaml = if era == "modern" {
            yaml.split("---\n")
                .filter(|d| !d.contains("name: meshvm-doctor-legacy"))
                .collect::<Vec<_>>()
                .join("---\n")
        } else {
            yaml
        };
        grant(&server, &yaml).await;
        server.reset_requests();
        let audited = as_auditor(sim::DOCTOR, &server, &[]).await;
        assert_eq!(
            refused(&server),
            Vec::<String>::new(),
            "{era}: {}",
            audited.show()
        );
        assert_eq!(audited.code, admin.code, "{era}: {}", audited.show());
        // The same findings (the admin's report names its context the same way).
        assert_eq!(
            audited.stdout.replace(USER, "kube-sim"),
            admin.stdout,
            "{era}"
        );
        for r in server.requests().records {
            assert!(
                !(r.verb == "list"
                    && r.path == "/api/v1/secrets"
                    && !r.query.contains("fieldSelector=type")),
                "{era}: an unfiltered Secret list: {r:?}"
            );
            assert!(
                !(r.verb == "list"
                    && r.path == "/api/v1/configmaps"
                    && !r.query.contains("fieldSelector=metadata.name")),
                "{era}: an unfiltered ConfigMap list: {r:?}"
            );
            // Pods asked for as metadata, plain JSON the second choice (the legacy scenario is
            // Kubernetes 1.14, which answers with the full list).
            if r.verb == "list" && r.path == "/api/v1/pods" {
                assert!(
                    r.status == 200
                        && r.accept
                            .starts_with("application/json;as=PartialObjectMetadataList"),
                    "{era}: {r:?}"
                );
            }
        }
        if era == "modern" {
            let secrets =
                kubectl(&server, &["--context", USER, "get", "secrets", "-A"], None).await;
            assert_eq!(secrets.code, 1, "{}", secrets.show());
            assert!(
                secrets.stderr.contains("Error from server (Forbidden)")
                    && secrets.stderr.contains("cannot list resource \"secrets\""),
                "{}",
                secrets.show()
            );
        }
    }
}

/// Without the Role in the Istio namespace doctor cannot read cacerts: the CA checks skip,
/// saying why, and the other checks still report.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_without_the_secret_role_skips_the_ca_checks_and_reports_the_rest() {
    let server = Server::start(modern()).await;
    let yaml = printed(sim::DOCTOR, &server, &[]).await;
    grant(&server, &without(&yaml, ("secrets", "get", true))).await;
    let run = as_auditor(sim::DOCTOR, &server, &[]).await;
    assert!(run.stdout.contains("cannot read Secrets"), "{}", run.show());
    assert!(run.stdout.contains("forbidden"), "{}", run.show());
    assert!(
        run.stdout.contains("mtls."),
        "the rest is reported: {}",
        run.show()
    );
}

/// Without the right to list the named ConfigMaps doctor still reads the injector by name and
/// reports; it says what it left out (the mesh config, the roots of istio-ca-root-cert, the
/// Prometheus config) and where the role is.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_without_the_config_map_list_says_what_it_left_out() {
    let server = Server::start(modern()).await;
    let yaml = printed(sim::DOCTOR, &server, &[]).await;
    grant(&server, &without(&yaml, ("configmaps", "list", true))).await;
    let run = as_auditor(sim::DOCTOR, &server, &[]).await;
    for name in ["istio", "istio-ca-root-cert", "prometheus"] {
        let note = format!("ConfigMaps named {name} not read, so ");
        assert!(run.stderr.contains(&note), "{note}: {}", run.show());
    }
    assert!(
        run.stderr
            .contains("`kubectl meshvm doctor --print-rbac` prints the role doctor needs"),
        "{}",
        run.show()
    );
    let refused = refused(&server);
    assert!(
        !refused.is_empty()
            && refused
                .iter()
                .all(|r| r.starts_with("list /api/v1/configmaps?")),
        "{refused:?}"
    );
    assert!(
        run.stdout.contains("mtls."),
        "the rest is reported: {}",
        run.show()
    );
}

/// A verb's run: binary, `--print-rbac` arguments, run arguments, the right taken out.
type Step<'a> = (
    &'static str,
    Vec<&'a str>,
    Vec<&'a str>,
    (&'a str, &'a str, bool),
);

/// prepare, bundle and register, each on its own printed roles, on both eras; then each with
/// one right taken out fails, naming it and `--print-rbac`.
#[tokio::test(flavor = "multi_thread")]
async fn each_verb_runs_on_its_printed_role_and_names_a_missing_right() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = sim::samples().display().to_string();
    let legacy_dir = tmp.path().join("legacy").display().to_string();
    let modern_dir = tmp.path().join("modern").display().to_string();
    let flows: [(Scenario, Vec<Step<'_>>); 2] = [
        (
            legacy(),
            vec![
                (
                    sim::PREPARE,
                    vec!["--vm-namespace", "expandvm"],
                    vec![
                        "--vm-namespace",
                        "expandvm",
                        "--ca-dir",
                        &samples,
                        "--restart-control-plane",
                        "--yes",
                    ],
                    ("serviceaccounts", "create", false),
                ),
                (
                    sim::BUNDLE,
                    vec!["--vm-namespace", "expandvm", "-d", &legacy_dir],
                    vec![
                        "--vm-namespace",
                        "expandvm",
                        "--inbound-ports",
                        "80",
                        "-d",
                        &legacy_dir,
                    ],
                    ("secrets", "get", false),
                ),
                (
                    sim::REGISTER,
                    vec!["-n", "expandvm"],
                    vec![
                        "expandvm",
                        "-s",
                        "expandvm",
                        "-n",
                        "expandvm",
                        "35.187.36.54",
                        "80",
                    ],
                    ("endpoints", "create", false),
                ),
            ],
        ),
        (
            modern(),
            vec![
                (
                    sim::PREPARE,
                    vec!["--vm-namespace", "vm"],
                    vec![
                        "--vm-namespace",
                        "vm",
                        "-s",
                        "vm-sa",
                        "--ca-dir",
                        &samples,
                        "--workload-group",
                        "vm",
                        "--labels",
                        "app=vm",
                        "--ports",
                        "http=8080",
                    ],
                    ("workloadgroups", "patch", false),
                ),
                (
                    sim::BUNDLE,
                    vec!["--vm-namespace", "vm", "-d", &modern_dir],
                    vec![
                        "--vm-namespace",
                        "vm",
                        "--workload-group",
                        "vm",
                        "--internal-ip",
                        "10.0.0.5",
                        "-d",
                        &modern_dir,
                    ],
                    ("serviceaccounts/token", "create", false),
                ),
                (
                    sim::REGISTER,
                    vec!["-n", "vm"],
                    vec![
                        "--workload-entry",
                        "vm-1",
                        "--address",
                        "10.0.0.5",
                        "-n",
                        "vm",
                        "--workload-group",
                        "vm",
                        "--service",
                        "vm",
                    ],
                    ("workloadentries", "patch", false),
                ),
            ],
        ),
    ];
    for (scenario, steps) in flows {
        let server = Server::start(scenario).await;
        for (bin, print_args, args, missing) in steps {
            let (resource, verb, _) = missing;
            let name = bin.rsplit('-').next().unwrap();
            let yaml = printed(bin, &server, &print_args).await;
            // First with one right taken out: it stops there, naming the right and the command.
            grant(&server, &without(&yaml, missing)).await;
            let failed = as_auditor(bin, &server, &args).await;
            assert_eq!(
                failed.code,
                1,
                "{name} without {verb} {resource}: {}",
                failed.show()
            );
            let hint = format!("`kubectl meshvm {name} --print-rbac` prints the role it needs");
            assert!(
                failed.stderr.contains("forbidden")
                    && failed.stderr.contains(resource)
                    && failed.stderr.contains(&hint),
                "{name} without {verb} {resource}: {}",
                failed.show()
            );
            // Then with the whole role (applied over the short one): the rerun converges, no 403.
            grant(&server, &yaml).await;
            server.reset_requests();
            let run = as_auditor(bin, &server, &args).await;
            assert_eq!(run.code, 0, "{name}: {}", run.show());
            assert_eq!(
                refused(&server),
                Vec::<String>::new(),
                "{name}: {}",
                run.show()
            );
        }
    }
}
