//! Every hint and every `--help` example is a command that works as printed.
//!
//! The rule the house keeps: a command meshvm suggests is written in backticks, starts with
//! `kubectl`, and runs as printed, in a script (stdin not a terminal), against the cluster the
//! message is about. The one placeholder allowed is `CA_DIR`, the directory of the user's own CA
//! files (which meshvm cannot know); these tests put Istio's sample CA there.
//!
//! Each test drives a real user path into a state that prints hints (a fresh cluster, a verb run
//! before `prepare`, a stale Citadel, each broken scenario, a finding in a second context),
//! collects every backticked `kubectl …` from stdout, stderr and doctor's JSON, and runs it
//! through the real kubectl dispatcher: it must succeed (a hinted `doctor` may exit 1 with
//! findings, never 2). The examples of every verb's `--help` run the same way, each in the
//! scenario it is written for; an example these tests do not know fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kube_sim::{Scenario, Server};
use serde_json::Value;

use crate::common::sim;

/// The placeholder a hint may carry: the user's CA directory.
const CA_DIR: &str = "CA_DIR";

/// A cluster, a working directory laid out as an Istio release's (`samples/certs`), and the
/// plugin binaries on PATH before the real kubectl dispatcher.
struct Lab {
    _server: Server,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

/// What one command printed, and how it ended.
#[derive(Debug)]
struct Ran {
    line: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn show(&self) -> String {
        format!(
            "$ {}\n--- stdout\n{}--- stderr\n{}(exit {:?})\n",
            self.line, self.stdout, self.stderr, self.code
        )
    }
}

impl Lab {
    async fn start(scenario: Scenario) -> Option<Lab> {
        let kubectl = kube_sim::testenv::require_kubectl()?;
        let server = Server::start(scenario).await;
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("samples/certs");
        std::fs::create_dir_all(&certs).unwrap();
        for f in [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ] {
            std::fs::copy(sim::samples().join(f), certs.join(f)).unwrap();
        }
        let kubeconfig = server.kubeconfig_path().to_path_buf();
        Some(Lab {
            _server: server,
            dir,
            kubectl,
            kubeconfig,
        })
    }

    /// Run one command line as a script would (`sh -c`, so pipes and redirections are the
    /// shell's), `CA_DIR` replaced by the sample CA, stdin not a terminal, in the lab's directory.
    async fn sh(&self, line: &str) -> Ran {
        assert!(
            shell_words::split(line).is_ok(),
            "`{line}` does not parse as a shell command"
        );
        let certs = self.dir.path().join("samples/certs");
        let script = line.replace(CA_DIR, &certs.to_string_lossy());
        let bin = Path::new(sim::PREPARE).parent().unwrap().to_path_buf();
        let kubeconfig = self.kubeconfig.clone();
        let cwd = self.dir.path().to_path_buf();
        let kubectl_dir = self
            .kubectl
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let line = line.to_owned();
        tokio::task::spawn_blocking(move || {
            let path = std::env::join_paths([bin, kubectl_dir].into_iter().chain(
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
            ))
            .unwrap();
            let out = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .current_dir(&cwd)
                .env("KUBECONFIG", &kubeconfig)
                .env("PATH", path)
                .env("NO_COLOR", "1")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            Ran {
                line,
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .await
        .unwrap()
    }

    /// Run `line`, expecting `codes`.
    async fn expect(&self, line: &str, codes: &[i32]) -> Ran {
        let ran = self.sh(line).await;
        assert!(
            ran.code.is_some_and(|c| codes.contains(&c)),
            "expected exit {codes:?}:\n{}",
            ran.show()
        );
        ran
    }

    /// Follow every command `ran` hinted at: each must work as printed. Returns them, run.
    async fn follow(&self, ran: &Ran) -> Vec<Ran> {
        let hinted = hinted_commands(ran);
        let mut done = Vec::new();
        for cmd in hinted {
            let followed = self.sh(&cmd).await;
            assert_runs_as_printed(&followed, ran);
            done.push(followed);
        }
        done
    }
}

/// The backticked `kubectl …` commands in what a run printed (doctor's JSON strings included).
fn hinted_commands(ran: &Ran) -> Vec<String> {
    let mut texts = vec![ran.stderr.clone()];
    match serde_json::from_str::<Value>(&ran.stdout) {
        Ok(json) => strings(&json, &mut texts),
        Err(_) => texts.push(ran.stdout.clone()),
    }
    let mut out: Vec<String> = Vec::new();
    for text in texts {
        let unquoted = unquoted_commands(&text);
        assert!(
            unquoted.is_empty(),
            "commands outside backticks (every hinted command is in backticks): {unquoted:?}\nprinted by:\n{}",
            ran.show()
        );
        for cmd in backticked_kubectl(&text) {
            if !out.contains(&cmd) {
                out.push(cmd);
            }
        }
    }
    out
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The commands between backticks in `text` that run kubectl: starting with it, or an `echo`
/// piped into it.
fn backticked_kubectl(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("kubectl ") || (s.starts_with("echo ") && s.contains("| kubectl "))
        })
        .map(str::to_owned)
        .collect()
}

/// `kubectl <command>` written outside backticks in `text`: a command a reader cannot tell from
/// the prose around it (and these tests cannot find to run).
fn unquoted_commands(text: &str) -> Vec<String> {
    const COMMANDS: [&str; 12] = [
        "meshvm",
        "get",
        "apply",
        "create",
        "patch",
        "label",
        "annotate",
        "rollout",
        "delete",
        "describe",
        "kustomize",
        "-n",
    ];
    text.split('`')
        .step_by(2)
        .flat_map(|outside| {
            outside.match_indices("kubectl ").filter_map(|(at, _)| {
                let next = outside[at + 8..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default();
                COMMANDS
                    .contains(&next)
                    .then(|| outside[at..].lines().next().unwrap_or_default().to_owned())
            })
        })
        .collect()
}

/// Words a printed command must not hold: `<sa>`, `NAME`, `DIR` — anything a user would have to
/// replace — except `CA_DIR`.
fn placeholders(cmd: &str) -> Vec<String> {
    shell_words::split(cmd)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|w| match w.split_once('=') {
            Some((_, v)) => vec![w.clone(), v.to_owned()],
            None => vec![w],
        })
        .filter(|w| {
            (w.contains('<') && w.contains('>'))
                || (w.len() > 1
                    && w != CA_DIR
                    && !w.starts_with("CA_DIR/")
                    && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    && w.chars().any(|c| c.is_ascii_uppercase()))
        })
        .collect()
}

#[track_caller]
fn assert_runs_as_printed(followed: &Ran, from: &Ran) {
    let holes = placeholders(&followed.line);
    assert!(
        holes.is_empty(),
        "a hint holds placeholders {holes:?}: `{}`\nprinted by:\n{}",
        followed.line,
        from.show()
    );
    // doctor exits 1 while findings remain (also after --fix), never with an error.
    let doctor = followed.line.starts_with("kubectl meshvm doctor")
        && !followed.stderr.lines().any(|l| l.starts_with("error:"));

    let ok = match followed.code {
        Some(0) => true,
        Some(1) => doctor,
        _ => false,
    };
    assert!(
        ok,
        "a hinted command failed as printed:\n{}\nprinted by:\n{}",
        followed.show(),
        from.show()
    );
}

fn legacy_at(kube: &str) -> Scenario {
    sim::legacy().with_kube_version(kube)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verb_run_before_prepare_hints_the_prepare_that_fixes_it() {
    // Legacy (Kubernetes 1.14, as the runbook ran): bundle and register before prepare.
    let Some(lab) = Lab::start(legacy_at("1.14")).await else {
        return;
    };
    let bundle = lab
        .expect(
            "kubectl meshvm bundle -n expandvm --inbound-ports 80 -d expandvm --wait 0s",
            &[1],
        )
        .await;
    let followed = lab.follow(&bundle).await;
    assert!(
        followed.iter().any(|r| r.line.contains("meshvm prepare")),
        "bundle before prepare hints no prepare:\n{}",
        bundle.show()
    );
    let register = lab
        .sh("kubectl meshvm register expandvm 203.0.113.7 80 -n nowhere")
        .await;
    assert_eq!(register.code, Some(1), "{}", register.show());
    lab.follow(&register).await;

    // Modern: bundle for a WorkloadGroup that does not exist.
    let Some(lab) = Lab::start(sim::modern()).await else {
        return;
    };
    let bundle = lab
        .expect(
            "kubectl meshvm bundle -n vm --workload-group vm -d vm-files",
            &[1],
        )
        .await;
    let followed = lab.follow(&bundle).await;
    assert!(
        !followed.is_empty(),
        "no command hinted:\n{}",
        bundle.show()
    );
    lab.expect(
        "kubectl meshvm bundle -n vm --workload-group vm -d vm-files",
        &[0],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_citadel_hints_commands_that_restart_it() {
    let Some(lab) = Lab::start(legacy_at("1.16")).await else {
        return;
    };
    // prepare in a script, without --restart-control-plane: cacerts changes, Citadel keeps its CA.
    let prepare = lab
        .expect(
            "kubectl meshvm prepare -n expandvm --ca-dir samples/certs",
            &[0],
        )
        .await;
    let bundle = lab
        .expect(
            "kubectl meshvm bundle -n expandvm --inbound-ports 80 -d expandvm --wait 0s",
            &[1],
        )
        .await;
    let hinted = hinted_commands(&prepare)
        .into_iter()
        .chain(hinted_commands(&bundle))
        .collect::<Vec<_>>();
    assert!(
        hinted.iter().any(|c| c.contains("restart")),
        "neither prepare nor bundle hints a restart:\n{}{}",
        prepare.show(),
        bundle.show()
    );
    lab.follow(&prepare).await;
    lab.follow(&bundle).await;
    lab.expect(
        "kubectl meshvm bundle -n expandvm --inbound-ports 80 -d expandvm --force",
        &[0],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_hints_on_a_fresh_cluster_and_on_each_broken_scenario_work_as_printed() {
    let mut scenarios: Vec<(String, Scenario)> = vec![
        ("legacy-1.4 (fresh)".into(), sim::legacy()),
        ("modern (fresh)".into(), sim::modern()),
    ];
    let dir = sim::repo().join("tests/scenarios");
    let mut broken: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("broken-"))
        .collect();
    broken.sort();
    assert!(
        !broken.is_empty(),
        "no broken scenarios under {}",
        dir.display()
    );
    for name in broken {
        scenarios.push((name.clone(), sim::scenario(&name)));
    }
    let mut hinted_total = 0;
    for (name, scenario) in scenarios {
        let Some(lab) = Lab::start(scenario).await else {
            return;
        };
        let doctor = lab.expect("kubectl meshvm doctor -o json", &[0, 1]).await;
        let followed = lab.follow(&doctor).await;
        hinted_total += followed.len();
        eprintln!("{name}: {} hinted commands ran", followed.len());
    }
    assert!(
        hinted_total > 0,
        "no scenario printed a single command to run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_examples_work_as_printed() {
    let tree = meshvm::args::command_tree();
    let mut ran = 0;
    for verb in tree.get_subcommands() {
        let help = verb
            .get_after_help()
            .map(ToString::to_string)
            .unwrap_or_default();
        // An example is a line that runs kubectl (`kubectl meshvm …`, or a pipe into it).
        let examples: Vec<&str> = help
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains("kubectl meshvm "))
            .collect();
        assert!(
            !examples.is_empty(),
            "{} --help has no examples",
            verb.get_name()
        );
        for example in examples {
            let setting = Setting::of(example);
            let Some(lab) = Lab::start(setting.scenario).await else {
                return;
            };
            lab.with_contexts(example);
            for step in &setting.before {
                lab.expect(step, &[0]).await;
            }
            lab.with_files(example);
            lab.expect(example, setting.codes).await;
            ran += 1;
        }
    }
    assert!(ran >= 10, "only {ran} examples ran");
}

/// The cluster an example is written for and the steps a user takes before it: modern when it
/// names a WorkloadGroup or WorkloadEntry, else the runbook's legacy cluster; `prepare` for the
/// example's namespace (and group) before every verb but a first `prepare`; a registration
/// before `--deregister`; a bundle before `doctor --bundle`.
struct Setting {
    scenario: Scenario,
    before: Vec<String>,
    codes: &'static [i32],
}

impl Setting {
    fn of(example: &str) -> Setting {
        let words = shell_words::split(example).unwrap();
        let value = |flag: &str| {
            words
                .windows(2)
                .find(|w| w[0] == flag)
                .map(|w| w[1].clone())
        };
        let verb = words
            .iter()
            .skip_while(|w| *w != "meshvm")
            .nth(1)
            .cloned()
            .unwrap_or_default();
        let modern = example.contains("--workload-group") || example.contains("--workload-entry");
        let ns = value("-n").unwrap_or_else(|| if modern { "vm" } else { "expandvm" }.to_owned());
        let prepare = match value("--workload-group") {
            Some(group) => format!(
                "kubectl meshvm prepare -n {ns} --workload-group {group} --labels app={group} --ports http=8080 --network vm-net"
            ),
            None => format!(
                "kubectl meshvm prepare -n {ns} --ca-dir samples/certs --restart-control-plane --yes"
            ),
        };
        let mut before = Vec::new();
        let mut codes: &'static [i32] = &[0];
        match verb.as_str() {
            "prepare" if example.contains("--delete") => before.push(prepare),
            "prepare" => {}
            "register" if example.contains("--deregister") && !modern => {
                before.push(prepare);
                let ip = words
                    .iter()
                    .find(|w| w.parse::<std::net::IpAddr>().is_ok())
                    .cloned();
                let service = words
                    .iter()
                    .skip_while(|w| *w != "--deregister")
                    .nth(1)
                    .cloned();
                if let (Some(ip), Some(service)) = (ip, service) {
                    before.push(format!("kubectl meshvm register {service} {ip} 80 -n {ns}"));
                }
            }
            "doctor" => {
                codes = &[0, 1];
                if let Some(bundle) = value("--bundle") {
                    let dir = bundle.trim_end_matches(".tar.gz").to_owned();
                    before.push(prepare);
                    before.push(format!(
                        "kubectl meshvm bundle -n {ns} --inbound-ports 80 -d {dir} --archive {bundle}"
                    ));
                }
            }
            _ => before.push(prepare),
        }
        Setting {
            scenario: if modern { sim::modern() } else { sim::legacy() },
            before,
            codes,
        }
    }
}

impl Lab {
    /// Contexts an example names (`--context east`) are added to the lab's kubeconfig, each
    /// pointing at the lab's cluster, so the example runs as printed.
    fn with_contexts(&self, example: &str) {
        let words = shell_words::split(example).unwrap();
        let names: Vec<&String> = words
            .windows(2)
            .filter(|w| w[0] == "--context")
            .map(|w| &w[1])
            .collect();
        if names.is_empty() {
            return;
        }
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let mut config: Value = serde_saphyr::from_str(&text).unwrap();
        let template = config["contexts"][0].clone();
        let contexts = config["contexts"].as_array_mut().unwrap();
        for name in names {
            let mut c = template.clone();
            c["name"] = Value::String(name.clone());
            contexts.push(c);
        }
        std::fs::write(&self.kubeconfig, serde_json::to_string(&config).unwrap()).unwrap();
    }

    /// Files an example reads that no earlier step wrote: a manifests folder for `-f manifests/`.
    fn with_files(&self, example: &str) {
        if example.contains("-f manifests/") {
            let dir = self.dir.path().join("manifests");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("dr.yaml"),
                "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  host: reviews.bookinfo.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n",
            )
            .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_in_a_second_context_hints_commands_for_that_context() {
    // east is ready for STRICT; west has a DISABLE rule against a STRICT namespace.
    let Some(east) = Lab::start(sim::scenario("legacy-1.4-strict-ready.yaml")).await else {
        return;
    };
    let west = Server::start(sim::scenario("broken-local-dr-disable-strict.yaml")).await;
    east.merge_context("west", west.kubeconfig_path());
    let doctor = east
        .expect(
            "kubectl meshvm doctor --context kube-sim --context west -o json",
            &[1],
        )
        .await;
    let json: Value =
        serde_json::from_str(&doctor.stdout).unwrap_or_else(|e| panic!("{e}\n{}", doctor.show()));
    let mut west_commands = 0;
    let mut findings = Vec::new();
    collect_findings(&json, &mut findings);
    for f in findings {
        let context = f.get("context").and_then(Value::as_str).unwrap_or_default();
        let mut texts = Vec::new();
        strings(f, &mut texts);
        for cmd in texts.iter().flat_map(|t| backticked_kubectl(t)) {
            if context == "west" {
                west_commands += 1;
                assert!(
                    cmd.contains("--context west"),
                    "a west finding hints a command for the current context: `{cmd}`\n{}",
                    doctor.show()
                );
            }
        }
    }
    assert!(
        west_commands > 0,
        "west's findings hint no command:\n{}",
        doctor.show()
    );
    east.follow(&doctor).await;
    let after = east.sh("kubectl meshvm doctor --context west").await;
    assert_ne!(after.code, Some(2), "{}", after.show());
}

/// Every JSON object that looks like a finding (has `check` and `severity`).
fn collect_findings<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(o) if o.contains_key("check") && o.contains_key("severity") => out.push(v),
        Value::Object(o) => o.values().for_each(|x| collect_findings(x, out)),
        Value::Array(a) => a.iter().for_each(|x| collect_findings(x, out)),
        _ => {}
    }
}

impl Lab {
    /// Add the cluster of `other` (a kube-sim kubeconfig) to the lab's kubeconfig as `name`.
    fn merge_context(&self, name: &str, other: &Path) {
        let read = |p: &Path| -> Value {
            serde_saphyr::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let mut config = read(&self.kubeconfig);
        let theirs = read(other);
        let mut cluster = theirs["clusters"][0].clone();
        cluster["name"] = Value::String(name.to_owned());
        let mut user = theirs["users"][0].clone();
        user["name"] = Value::String(name.to_owned());
        let mut context = theirs["contexts"][0].clone();
        context["name"] = Value::String(name.to_owned());
        context["context"]["cluster"] = Value::String(name.to_owned());
        context["context"]["user"] = Value::String(name.to_owned());
        config["clusters"].as_array_mut().unwrap().push(cluster);
        config["users"].as_array_mut().unwrap().push(user);
        config["contexts"].as_array_mut().unwrap().push(context);
        std::fs::write(&self.kubeconfig, serde_json::to_string(&config).unwrap()).unwrap();
    }
}

#[test]
fn the_hint_rules_catch_what_they_should() {
    assert_eq!(
        backticked_kubectl(
            "create it (`kubectl meshvm prepare -n x`), or `ls` then `kubectl get ns`"
        ),
        ["kubectl meshvm prepare -n x", "kubectl get ns"]
    );
    assert_eq!(
        placeholders("kubectl meshvm prepare -n x --ca-dir CA_DIR"),
        Vec::<String>::new()
    );
    assert_eq!(placeholders("kubectl meshvm prepare --ca-dir DIR"), ["DIR"]);
    assert!(
        placeholders("kubectl -n x label service s topology.istio.io/network=<network>")
            .contains(&"<network>".to_owned())
    );
    assert_eq!(
        unquoted_commands("fix it: kubectl -n x patch dr y, as kubectl does; or `kubectl get x`"),
        ["kubectl -n x patch dr y, as kubectl does; or "]
    );
    assert_eq!(
        backticked_kubectl(
            "`echo '{}' | kubectl apply -f -` or `helm template c | kubectl meshvm doctor -f -`"
        ),
        ["echo '{}' | kubectl apply -f -"]
    );
    assert_eq!(
        placeholders(
            "kubectl -n x patch dr y --type=merge -p '{\"spec\":{\"tls\":{\"mode\":\"ISTIO_MUTUAL\"}}}'"
        ),
        Vec::<String>::new()
    );
}
