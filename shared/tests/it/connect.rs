//! Client construction from kubectl's flags, and the errors an operator sees when it fails.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use meshvm::errors::Diagnose;
use meshvm::flags::KubeArgs;
use meshvm::kube::{Error, Request, connect};

fn args(kubeconfig: &std::path::Path) -> KubeArgs {
    KubeArgs {
        kubeconfig: Some(kubeconfig.to_owned()),
        request_timeout: Duration::from_secs(30),
        ..KubeArgs::default()
    }
}

fn kubeconfig(
    dir: &std::path::Path,
    name: &str,
    server: &str,
    contexts: &[&str],
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {}\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t0ken\ncontexts:\n",
        contexts[0]
    );
    for c in contexts {
        let _ = write!(
            text,
            "- name: {c}\n  context:\n    cluster: c\n    user: u\n    namespace: ns-{c}\n"
        );
    }
    std::fs::write(&path, text).unwrap();
    path
}

async fn list_namespaces(a: &KubeArgs) -> Result<(), Error> {
    let conn = connect(a, a.single_context().unwrap()).await?;
    let api: Api<Namespace> = Api::all(conn.client.clone());
    let lp = ListParams::default();
    conn.call(Request::new("list", "namespaces"), || api.list(&lp))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn missing_kubeconfig_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = connect(&args(&dir.path().join("nope")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KubeconfigMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(err.hint().unwrap().contains("--kubeconfig"));
}

#[tokio::test]
async fn malformed_kubeconfig_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "apiVersion: v1\nclusters:\n- name: c\n  cluster: [unclosed"
    )
    .unwrap();
    let err = connect(&args(&path), None).await.unwrap_err();
    let text = meshvm::errors::error_chain(&err);
    assert!(matches!(err, Error::KubeconfigInvalid { .. }), "{err:?}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("line"),
        "the parser's line should be named: {text}"
    );
}

#[tokio::test]
async fn unknown_context_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(
        dir.path(),
        "config",
        "https://127.0.0.1:1",
        &["east", "west"],
    );
    let mut a = args(&path);
    a.context = vec!["north".into()];
    let err = connect(&a, Some("north")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"north\"") && text.contains("east, west"),
        "{text}"
    );
}

#[tokio::test]
async fn namespace_flag_overrides_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), "config", "https://127.0.0.1:1", &["east"]);
    let conn = connect(&args(&path), None).await.unwrap();
    assert_eq!(conn.namespace(), "ns-east");
    assert!(!conn.namespace_explicit);
    let mut a = args(&path);
    a.namespace = Some("mine".into());
    let conn = connect(&a, None).await.unwrap();
    assert_eq!(conn.namespace(), "mine");
}

#[tokio::test]
async fn kubeconfig_env_skips_missing_files_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let first = kubeconfig(dir.path(), "a", "https://127.0.0.1:1", &["east"]);
    let second = kubeconfig(dir.path(), "b", "https://127.0.0.1:2", &["west"]);
    let missing = dir.path().join("missing");
    let joined = std::env::join_paths([&missing, &first, &second]).unwrap();
    let (config, used) = meshvm::kube::load_kubeconfig_from(None, Some(joined), None).unwrap();
    assert_eq!(used, vec![first, second]);
    let names: Vec<_> = config.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["east", "west"]);
    assert_eq!(
        config.current_context.as_deref(),
        Some("east"),
        "first file wins"
    );
    let none = std::env::join_paths([&missing]).unwrap();
    let err = meshvm::kube::load_kubeconfig_from(None, Some(none), None).unwrap_err();
    assert!(
        err.to_string().contains("none of the files in KUBECONFIG"),
        "{err}"
    );
    let home = dir.path().join("home");
    let err = meshvm::kube::load_kubeconfig_from(None, None, Some(home)).unwrap_err();
    assert!(
        err.to_string().contains(".kube/config does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_server_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let path = kubeconfig(dir.path(), "config", "https://127.0.0.1:1", &["east"]);
    let err = list_namespaces(&args(&path)).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("https://127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn silent_server_fails_within_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(8) {
            held.push(s);
        }
    });
    let server = format!("https://127.0.0.1:{port}");
    let path = kubeconfig(dir.path(), "config", &server, &["east"]);
    let mut a = args(&path);
    a.request_timeout = Duration::from_secs(1);
    let start = Instant::now();
    let err = list_namespaces(&a).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains(&server), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_say_so() {
    let server = kube_sim::Server::start(kube_sim::Scenario::empty()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    assert!(text.contains(server.token()));
    let wrong = dir.path().join("config");
    std::fs::write(&wrong, text.replace(server.token(), "not-the-token")).unwrap();
    let err = list_namespaces(&args(&wrong)).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused the credentials") && text.contains(&server.url()),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_refusal_names_verb_resource_and_namespace() {
    let server = kube_sim::Server::start(kube_sim::Scenario::empty()).await;
    server.deny("create", "secrets", Some("istio-system"));
    let conn = connect(&args(server.kubeconfig_path()), None)
        .await
        .unwrap();
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(conn.client.clone(), "istio-system");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cacerts", "namespace": "istio-system"}
    }))
    .unwrap();
    let pp = kube::api::PostParams::default();
    let err = conn
        .call(
            Request::new("create", "secrets")
                .ns("istio-system")
                .name("cacerts"),
            || api.create(&pp, &secret),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("create on secrets in namespace istio-system"),
        "{text}"
    );
    // Other namespaces are not denied.
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(conn.client.clone(), "default");
    let mut other = secret.clone();
    other.metadata.namespace = Some("default".into());
    conn.call(Request::new("create", "secrets").ns("default"), || {
        api.create(&pp, &other)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried() {
    let server = kube_sim::Server::start(kube_sim::Scenario::empty()).await;
    server.set_seed(7);
    server.add_fault(kube_sim::Fault::rate(
        kube_sim::FaultKind::InternalError,
        0.3,
    ));
    server.add_fault(kube_sim::Fault::rate(
        kube_sim::FaultKind::ConnectionReset,
        0.2,
    ));
    let a = args(server.kubeconfig_path());
    for _ in 0..10 {
        list_namespaces(&a).await.unwrap();
    }
    let log = server.requests();
    assert!(
        log.total() > 10,
        "faults were injected and retried: {}",
        log.total()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_flag_impersonates_and_rbac_names_that_user() {
    let server = kube_sim::Server::start(kube_sim::Scenario::empty()).await;
    server.deny("list", "namespaces", None);
    let mut a = args(server.kubeconfig_path());
    a.as_user = Some("alice@example.com".into());
    a.as_group = vec!["vm-admins".into()];
    let err = list_namespaces(&a).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("User \"alice@example.com\""), "{text}");
    assert!(err.hint().unwrap().contains("--as"), "{err:?}");
}
