//! Property tests for the parsers: cluster.env (bundle writes it, doctor reads it), register's
//! port words, `k=v` label lists, PEM bundles and kubeconfig merging — no panics on any input,
//! and what is written reads back the same.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use meshvm::args::{PrepareArgs, RegisterArgs};
use meshvm::bundle::{legacy, modern};
use meshvm::names::{self, NamedPort, PairKind};
use meshvm::pki::{self, CaMaterial, WorkloadMaterial};
use meshvm::snapshot::parse_env;
use proptest::prelude::*;
use serde_json::json;

/// A DNS-1123 label (namespaces, port names).
const LABEL: &str = "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?";
/// A printable character but `'` (what YAML carries unescaped, ASCII and beyond).
const VALUE_24: &str = "[ -&(-~\u{a0}-\u{d7ff}]{0,24}";
/// The same, shorter.
const VALUE_16: &str = "[ -&(-~\u{a0}-\u{d7ff}]{0,16}";
/// The name part of a label key, or a non-empty label value.
const QUALIFIED: &str = "[A-Za-z0-9]([A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?";

/// `KEY → value` of a cluster.env, as doctor reads it (later lines win, as in a shell).
fn env_map(text: &str) -> BTreeMap<String, String> {
    parse_env(text)
        .into_iter()
        .map(|(k, v, _)| {
            assert!(!k.is_empty(), "a line doctor cannot read: {v:?} in\n{text}");
            (k, v)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// cluster.env

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(a, l)| format!("{}/{l}", std::net::Ipv4Addr::from(a))),
        (any::<[u16; 8]>(), 0u8..=128)
            .prop_map(|(a, l)| format!("{}/{l}", std::net::Ipv6Addr::from(a))),
    ]
}

/// A WorkloadGroup as `modern::render` reads it, with free-form strings where Kubernetes allows them.
fn group(network: String, service_account: String) -> modern::WorkloadGroup {
    modern::WorkloadGroup {
        name: "vm".into(),
        namespace: "vm".into(),
        service_account,
        network,
        labels: BTreeMap::from([("app".into(), "vm".into())]),
        ports: BTreeMap::from([("http".into(), 8080)]),
        ..Default::default()
    }
}

/// Render the modern files with these proxyMetadata values and read cluster.env back.
fn modern_round_trip(
    metadata: &BTreeMap<String, String>,
    network: &str,
    internal_ip: Option<IpAddr>,
) -> Result<(), TestCaseError> {
    let g = group(network.to_owned(), "vm-sa".into());
    let mesh = json!({"defaultConfig": {"proxyMetadata": metadata}}).to_string();
    let files = modern::render(&modern::ModernInputs {
        group: &g,
        mesh_config: &mesh,
        istio_namespace: "istio-system",
        revision: None,
        cluster_id: "cluster1",
        internal_ip,
        gateway_ip: None,
        service_cidr: "*",
        inbound_ports: None,
    })
    .map_err(|e| TestCaseError::fail(format!("render: {e}")))?;
    let read = env_map(&files.cluster_env);
    for (k, v) in metadata {
        prop_assert_eq!(read.get(k), Some(v), "{} in\n{}", k, files.cluster_env);
    }
    prop_assert_eq!(
        read.get("ISTIO_META_NETWORK").map(String::as_str),
        Some(network)
    );
    prop_assert_eq!(
        read.get("SERVICE_ACCOUNT").map(String::as_str),
        Some("vm-sa")
    );
    prop_assert_eq!(
        read.get("ISTIO_SERVICE_CIDR").map(String::as_str),
        Some("*")
    );
    prop_assert_eq!(
        read.get("ISTIO_INBOUND_PORTS").map(String::as_str),
        Some("8080")
    );
    let ip = internal_ip.map(|ip| ip.to_string());
    prop_assert_eq!(read.get("ISTIO_SVC_IP"), ip.as_ref());
    Ok(())
}

proptest! {
    /// Legacy cluster.env (no quoting): every key doctor needs reads back as written.
    #[test]
    fn legacy_cluster_env_round_trips(
        service in LABEL,
        namespace in LABEL,
        istio_namespace in prop_oneof![Just("istio-system".to_owned()), LABEL.prop_map(|s| s)],
        cidrs in prop::collection::vec(cidr(), 1..4),
        ports in prop::collection::vec(1u16..=65535, 0..6),
    ) {
        let service_cidr = cidrs.join(",");
        let text = legacy::cluster_env(&legacy::LegacyEnv {
            service: &service,
            service_cidr: &service_cidr,
            inbound_ports: &ports,
            namespace: &namespace,
            istio_namespace: &istio_namespace,
        });
        let read = env_map(&text);
        prop_assert_eq!(read.get("ISTIO_CP_AUTH").map(String::as_str), Some("MUTUAL_TLS"));
        prop_assert_eq!(read.get("ISTIO_SERVICE"), Some(&service));
        prop_assert_eq!(read.get("ISTIO_SERVICE_CIDR"), Some(&service_cidr));
        let joined = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        prop_assert_eq!(read.get("ISTIO_INBOUND_PORTS"), Some(&joined));
        prop_assert_eq!(read.get("ISTIO_NAMESPACE"), Some(&namespace));
        let system = read.get("ISTIO_SYSTEM_NAMESPACE");
        if istio_namespace == "istio-system" {
            prop_assert_eq!(system, None);
        } else {
            prop_assert_eq!(system, Some(&istio_namespace));
        }
        prop_assert_eq!(parse_env(&text).len(), read.len(), "no key twice");
    }

    /// Modern cluster.env (istioctl's shell quoting): proxyMetadata values and the network,
    /// anything printable but a single quote, read back as the mesh config holds them.
    #[test]
    fn modern_cluster_env_round_trips(
        metadata in prop::collection::btree_map("X_[A-Z0-9_]{1,12}", VALUE_24, 0..5),
        network in VALUE_16,
        internal_ip in proptest::option::of(any::<IpAddr>()),
    ) {
        modern_round_trip(&metadata, &network, internal_ip)?;
    }

    /// The same with single quotes: istioctl's quoting writes `'` as `'"'"'` (the shell undoes
    /// it); doctor's reader must too.
    #[test]
    fn modern_cluster_env_round_trips_single_quotes(
        metadata in prop::collection::btree_map("X_[A-Z0-9_]{1,12}", "[a-z ']{0,12}'[a-z ']{0,12}", 1..3),
    ) {
        modern_round_trip(&metadata, "net", None)?;
    }

    /// Doctor's reader takes any text without panicking, and gives every line a number.
    #[test]
    fn parse_env_never_panics(text in "(?s).{0,400}") {
        for (_, _, line) in parse_env(&text) {
            prop_assert!(line >= 1 && line <= text.lines().count());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// register's port words

proptest! {
    /// Anything on the command line is a port or a usage message, never a panic; what parses
    /// prints back (`name:port`) as a word that parses to the same port.
    #[test]
    fn port_words_never_panic_and_print_back(word in "(?s).{0,30}") {
        if let Ok(p) = names::parse_port_word(&word) {
            prop_assert!(p.port != 0);
            prop_assert_eq!(names::parse_port_word(&p.to_string()), Ok(p));
        }
        let _ = names::parse_port_words(&[word.clone(), word.clone()]);
        let _ = names::parse_named_ports(&[word]);
    }

    /// `name:port` keeps the name; a bare port gets istioctl's well-known name or its number.
    #[test]
    fn port_words_round_trip(name in LABEL, port in 1u16..=65535) {
        let named = NamedPort { name: name.clone(), port };
        prop_assert_eq!(names::parse_port_word(&format!("{name}:{port}")), Ok(named.clone()));
        prop_assert_eq!(names::parse_port_word(&named.to_string()), Ok(named));
        let bare = names::parse_port_word(&port.to_string()).unwrap();
        prop_assert_eq!(bare.port, port);
        let expected = names::well_known_port_name(port).map_or_else(|| port.to_string(), str::to_owned);
        prop_assert_eq!(&bare.name, &expected);
        prop_assert_eq!(names::parse_port_word(&bare.to_string()), Ok(bare));
    }

    /// Several words: order kept; a port or a name given twice is refused.
    #[test]
    fn port_word_lists(ports in prop::collection::btree_map(LABEL, 1u16..=65535, 1..6)) {
        let mut unique: Vec<NamedPort> = Vec::new();
        for (name, port) in &ports {
            if unique.iter().all(|p| p.port != *port) {
                unique.push(NamedPort { name: name.clone(), port: *port });
            }
        }
        let legacy: Vec<String> = unique.iter().map(ToString::to_string).collect();
        prop_assert_eq!(names::parse_port_words(&legacy), Ok(unique.clone()));
        let modern: Vec<String> = unique.iter().map(|p| format!("{}={}", p.name, p.port)).collect();
        prop_assert_eq!(names::parse_named_ports(&modern), Ok(unique.clone()));
        let mut twice = legacy.clone();
        twice.push(legacy[0].clone());
        prop_assert!(names::parse_port_words(&twice).is_err());
        let mut twice = modern.clone();
        twice.push(modern[0].clone());
        prop_assert!(names::parse_named_ports(&twice).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// label lists (k=v,…)

fn label_key() -> impl Strategy<Value = String> {
    (
        proptest::option::of(prop::collection::vec(LABEL, 1..3)),
        QUALIFIED,
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(parts) => format!("{}/{name}", parts.join(".")),
            None => name,
        })
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        label_key(),
        prop_oneof![Just(String::new()), QUALIFIED.prop_map(|s| s)],
        1..6,
    )
}

fn joined(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

proptest! {
    /// register `-l k=v,k=v` (split at commas by clap, as istioctl's) reads back as the map.
    #[test]
    fn register_labels_round_trip(map in labels()) {
        let args = RegisterArgs::try_parse_from(["register", "svc", "203.0.113.7", "80", "-l", &joined(&map)]).unwrap();
        let opts = meshvm::register::Options::resolve(args).unwrap();
        prop_assert_eq!(&opts.labels, &map);
        let items: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        prop_assert_eq!(names::parse_pairs(&items, PairKind::Label), Ok(map));
    }

    /// register `-a k=v` keeps commas and `=` in values (repeated flags, not split).
    #[test]
    fn register_annotations_keep_commas(
        map in prop::collection::btree_map(label_key(), "[ -~]{0,20}", 1..4),
    ) {
        let mut argv = vec!["register".to_owned(), "svc".into(), "203.0.113.7".into(), "80".into()];
        for (k, v) in &map {
            argv.push("-a".into());
            argv.push(format!("{k}={v}"));
        }
        let opts = meshvm::register::Options::resolve(RegisterArgs::try_parse_from(argv).unwrap()).unwrap();
        prop_assert_eq!(opts.annotations, map);
    }

    /// prepare `--labels k=v,k=v` (its parser is private: read through `Options::resolve`).
    #[test]
    fn prepare_labels_round_trip(map in labels()) {
        let args = PrepareArgs::try_parse_from([
            "prepare", "--vm-namespace", "vm", "--workload-group", "vm", "--labels", &joined(&map),
        ])
        .unwrap();
        let opts = meshvm::prepare::Options::resolve(args).unwrap();
        prop_assert_eq!(opts.workload_group.unwrap().labels, map);
    }

    /// Both verbs take labels for the same objects' `labels` maps, so what one refuses as a
    /// Kubernetes label the other must refuse too (else the API server or Istio's webhook does,
    /// after earlier writes).
    #[test]
    fn prepare_refuses_the_labels_register_refuses(text in "[a-z =@/.,_-]{1,20}") {
        let register = names::parse_pairs(&text.split(',').collect::<Vec<_>>(), PairKind::Label);
        let prepare = PrepareArgs::try_parse_from([
            "prepare", "--vm-namespace", "vm", "--workload-group", "vm", "--labels", &text,
        ])
        .map(|a| meshvm::prepare::Options::resolve(a).map(|o| o.workload_group.unwrap().labels));
        if register.is_err() {
            prop_assert!(!matches!(prepare, Ok(Ok(_))), "prepare took {text:?}: {prepare:?}");
        }
    }

    /// Any label text is a map or a usage error, for both verbs.
    #[test]
    fn label_lists_never_panic(text in "(?s).{0,60}") {
        let _ = names::parse_pairs(std::slice::from_ref(&text), PairKind::Label);
        let _ = names::parse_pairs(std::slice::from_ref(&text), PairKind::Annotation);
        if let Ok(args) = PrepareArgs::try_parse_from(["prepare", "--vm-namespace", "vm", "--workload-group", "vm", "--labels", &text]) {
            let _ = meshvm::prepare::Options::resolve(args);
        }
        if let Ok(args) = RegisterArgs::try_parse_from(["register", "svc", "203.0.113.7", "80", "-l", &text]) {
            let _ = meshvm::register::Options::resolve(args);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PEM bundles (meshvm::pki)

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/istio-samples")
            .join(name),
    )
    .unwrap()
}

fn samples_data() -> BTreeMap<String, Vec<u8>> {
    [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ]
    .into_iter()
    .map(|n| (n.to_owned(), sample(n)))
    .collect()
}

/// Run every public PEM entry point over these inputs; only panics fail.
fn judge_everything(data: &BTreeMap<String, Vec<u8>>) {
    let now = SystemTime::now();
    let week = Duration::from_secs(7 * 86_400);
    if let Ok(m) = CaMaterial::from_secret_data("secret istio-system/cacerts", data) {
        let _ = pki::check_ca(&m, now, week);
    }
    let mut workload = data.clone();
    if let Some(k) = data.get("ca-key.pem") {
        workload.insert("key.pem".into(), k.clone());
    }
    if let Ok(m) = WorkloadMaterial::from_secret_data("secret vm/istio.vm", &workload) {
        let _ = pki::check_workload(&m, Some(("vm", "vm")), now, week);
        let _ = pki::check_workload(&m, None, now, week);
    }
    for bytes in data.values() {
        let _ = pki::root_identity(bytes);
        let _ = pki::root_identities(bytes);
        let _ = pki::compare_roots(bytes, &sample("root-cert.pem"));
    }
}

/// One edit of a file: truncate, flip a byte, insert a byte, or drop a line.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, u8),
    DropLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::DropLine),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    if bytes.is_empty() {
        return;
    }
    match *e {
        Edit::Truncate(i) => bytes.truncate(i % bytes.len()),
        Edit::Flip(i, b) => {
            let n = bytes.len();
            bytes[i % n] ^= b | 1;
        }
        Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Edit::DropLine(i) => {
            let mut lines: Vec<&[u8]> = bytes.split(|c| *c == b'\n').collect();
            let n = lines.len();
            lines.remove(i % n);
            *bytes = lines.join(&b'\n');
        }
    }
}

proptest! {
    /// Arbitrary bytes in any of the four cacerts keys: findings or errors, never a panic.
    #[test]
    fn pem_arbitrary_bytes_never_panic(
        which in 0usize..4,
        junk in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut data = samples_data();
        let key = ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"][which];
        data.insert(key.to_owned(), junk);
        judge_everything(&data);
    }

    /// The sample CA with a few random edits (broken base64, cut blocks, stray bytes).
    #[test]
    fn pem_edited_samples_never_panic(
        which in 0usize..4,
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut data = samples_data();
        let key = ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"][which];
        let file = data.get_mut(key).unwrap();
        for e in &edits {
            apply(file, e);
        }
        judge_everything(&data);
    }

    /// A bundle of N copies of a root reads as N identities, whatever the line endings.
    #[test]
    fn pem_bundles_keep_every_block(copies in 1usize..5, crlf in any::<bool>()) {
        let one = sample("root-cert.pem");
        let text = String::from_utf8(one.clone()).unwrap();
        let text = if crlf { text.replace('\n', "\r\n") } else { text };
        let bundle = text.repeat(copies);
        let ids = pki::root_identities(bundle.as_bytes()).unwrap();
        prop_assert_eq!(ids.len(), copies);
        let first = pki::root_identity(&one).unwrap();
        prop_assert!(ids.iter().all(|i| *i == first));
        prop_assert!(pki::compare_roots(bundle.as_bytes(), &one).unwrap().same());
    }
}

// ---------------------------------------------------------------------------------------------
// kubeconfig merging (meshvm::kube::load_kubeconfig_from)

const NAMES: [&str; 3] = ["a", "b", "c"];

/// One generated kubeconfig file: which clusters/users/contexts it names, its current-context,
/// and whether it exists at all.
#[derive(Debug, Clone)]
struct KubeFile {
    exists: bool,
    clusters: Vec<usize>,
    users: Vec<usize>,
    contexts: Vec<usize>,
    /// Index into `NAMES`; 3 writes `current-context: ""` (kubectl treats it as unset).
    current: Option<usize>,
}

/// A file; `currents` is 3 for names only, 4 to also write `current-context: ""`.
fn kube_file(currents: usize) -> impl Strategy<Value = KubeFile> {
    let subset = || {
        prop::collection::btree_set(0usize..3, 0..=3)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
    };
    (
        prop::bool::weighted(0.8),
        subset(),
        subset(),
        subset(),
        proptest::option::of(0usize..currents),
    )
        .prop_map(|(exists, clusters, users, contexts, current)| KubeFile {
            exists,
            clusters,
            users,
            contexts,
            current,
        })
}

/// The YAML of file `i`: every value says which file it came from.
fn kube_yaml(i: usize, f: &KubeFile) -> String {
    let clusters: Vec<_> = f.clusters.iter().map(|c| json!({"name": NAMES[*c], "cluster": {"server": format!("https://f{i}-{}.example:6443", NAMES[*c])}})).collect();
    let users: Vec<_> = f
        .users
        .iter()
        .map(|u| json!({"name": NAMES[*u], "user": {"token": format!("t{i}{}", NAMES[*u])}}))
        .collect();
    let contexts: Vec<_> = f.contexts.iter().map(|c| json!({"name": NAMES[*c], "context": {"cluster": NAMES[*c], "user": NAMES[*c], "namespace": format!("ns{i}")}})).collect();
    let mut doc = json!({"apiVersion": "v1", "kind": "Config", "clusters": clusters, "users": users, "contexts": contexts});
    if let Some(c) = f.current {
        doc["current-context"] = json!(NAMES.get(c).copied().unwrap_or(""));
    }
    doc.to_string()
}

/// Merge `files` through KUBECONFIG and check client-go's rules: missing files skipped, the
/// first file that names a cluster, user or context wins, and so does the first non-empty
/// current-context.
fn check_merge(files: &[KubeFile]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..files.len())
        .map(|i| dir.path().join(format!("config-{i}")))
        .collect();
    for (i, f) in files.iter().enumerate() {
        if f.exists {
            std::fs::write(&paths[i], kube_yaml(i, f)).unwrap();
        }
    }
    let env = std::env::join_paths(&paths).unwrap();
    let result = meshvm::kube::load_kubeconfig_from(None, Some(env), None);
    let present: Vec<usize> = (0..files.len()).filter(|i| files[*i].exists).collect();
    if present.is_empty() {
        prop_assert!(result.is_err(), "no file exists, yet {result:?}");
        return Ok(());
    }
    let (merged, read) =
        result.map_err(|e| TestCaseError::fail(meshvm::errors::error_chain(&e)))?;
    let expected_paths: Vec<PathBuf> = present.iter().map(|i| paths[*i].clone()).collect();
    prop_assert_eq!(read, expected_paths);
    for (n, name) in NAMES.iter().enumerate() {
        let first = |pick: fn(&KubeFile) -> &Vec<usize>| {
            present
                .iter()
                .copied()
                .find(|i| pick(&files[*i]).contains(&n))
        };
        let server = merged
            .clusters
            .iter()
            .find(|c| c.name == *name)
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone());
        prop_assert_eq!(
            server,
            first(|f| &f.clusters).map(|i| format!("https://f{i}-{name}.example:6443"))
        );
        let token = merged
            .auth_infos
            .iter()
            .find(|u| u.name == *name)
            .and_then(|u| u.auth_info.as_ref())
            .and_then(|a| serde_json::to_value(a).ok())
            .and_then(|a| a["token"].as_str().map(str::to_owned));
        prop_assert_eq!(token, first(|f| &f.users).map(|i| format!("t{i}{name}")));
        let ns = merged
            .contexts
            .iter()
            .find(|c| c.name == *name)
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.namespace.clone());
        prop_assert_eq!(ns, first(|f| &f.contexts).map(|i| format!("ns{i}")));
        prop_assert_eq!(
            merged.clusters.iter().filter(|c| c.name == *name).count(),
            usize::from(first(|f| &f.clusters).is_some())
        );
    }
    // client-go: the first file that sets a non-empty current-context wins.
    let current = present
        .iter()
        .find_map(|i| files[*i].current.filter(|c| *c < 3))
        .map(|c| NAMES[c].to_owned());
    prop_assert_eq!(merged.current_context.filter(|c| !c.is_empty()), current);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// KUBECONFIG with several files: missing ones skipped, first file wins per name and for
    /// current-context.
    #[test]
    fn kubeconfig_first_file_wins(files in prop::collection::vec(kube_file(3), 1..5)) {
        check_merge(&files)?;
    }

    /// The same with `current-context: ""` in some files: kubectl skips it and takes the next
    /// file's.
    #[test]
    fn kubeconfig_empty_current_context_is_unset(files in prop::collection::vec(kube_file(4), 1..5)) {
        check_merge(&files)?;
    }

    /// Any bytes in any of the files: a kubeconfig or an error naming the file, never a panic.
    #[test]
    fn kubeconfig_garbage_never_panics(
        good in kube_file(4),
        junk in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "(?s).{0,200}".prop_map(String::into_bytes),
            // UTF-16 LE (with its byte-order mark) of whole code units.
            prop::collection::vec(any::<u16>(), 0..40).prop_map(|v| {
                let mut bytes = vec![0xFF, 0xFE];
                bytes.extend(v.iter().flat_map(|u| u.to_le_bytes()));
                bytes
            }),
        ]
        .prop_filter("odd-length UTF-16 has its own test", |b| !b.starts_with(&[0xFF, 0xFE]) || b.len() % 2 == 0),
        junk_first in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let good_path = dir.path().join("good");
        let junk_path = dir.path().join("junk");
        std::fs::write(&good_path, kube_yaml(0, &good)).unwrap();
        std::fs::write(&junk_path, &junk).unwrap();
        let order = if junk_first { [&junk_path, &good_path] } else { [&good_path, &junk_path] };
        let env: OsString = std::env::join_paths(order).unwrap();
        let _ = meshvm::kube::load_kubeconfig_from(None, Some(env), None);
        let _ = meshvm::kube::load_kubeconfig_from(Some(&junk_path), None, None);
    }
}

/// A kubeconfig that starts with a UTF-16 byte-order mark but has an odd length is an error
/// naming the file, not a panic (kube-client 5.0's `read_path` indexes `chunk[1]` of a 1-byte chunk).
#[test]
fn kubeconfig_odd_length_utf16_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, [0xFF, 0xFE, b'a']).unwrap();
    let result =
        std::panic::catch_unwind(|| meshvm::kube::load_kubeconfig_from(Some(&path), None, None));
    match result {
        Ok(Err(e)) => assert!(
            meshvm::errors::error_chain(&e).contains("config"),
            "{}",
            meshvm::errors::error_chain(&e)
        ),
        Ok(Ok(_)) => panic!("three bytes read as a kubeconfig"),
        Err(panic) => panic!(
            "load_kubeconfig_from panicked on {}: {:?}",
            path.display(),
            panic.downcast_ref::<String>()
        ),
    }
}

/// A regression guard for the plain cases the properties build on.
#[test]
fn missing_explicit_kubeconfig_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(meshvm::kube::load_kubeconfig_from(Some(&missing), None, None).is_err());
    let env = std::env::join_paths([&missing]).unwrap();
    assert!(meshvm::kube::load_kubeconfig_from(None, Some(env), None).is_err());
}

proptest! {
    /// Durations (`--request-timeout`, `--token-duration`, …) never panic, whatever the words:
    /// overflowing ones are refused with words, accepted ones fit Go's int64 nanoseconds.
    #[test]
    fn durations_never_panic(text in "(?s).{0,40}") {
        let _ = meshvm::flags::parse_duration(&text);
    }

    #[test]
    fn duration_words_never_panic(parts in prop::collection::vec(
        ("[0-9]{1,25}(\\.[0-9]{0,5})?", prop::sample::select(vec!["ms", "s", "m", "h", "x", ""])),
        1..5,
    )) {
        let text = parts.iter().fold(String::new(), |mut t, (n, u)| {
            t.push_str(n);
            t.push_str(u);
            t
        });
        if let Ok(d) = meshvm::flags::parse_duration(&text) {
            prop_assert!(d <= Duration::from_nanos(i64::MAX as u64), "{text}: {d:?}");
        }
    }

    /// Every verb parses its duration flags through the same parser: huge values are a usage
    /// error (exit 2 from clap), never a panic.
    #[test]
    fn huge_request_timeouts_are_refused(hours in "[0-9]{12,30}") {
        let flag = format!("--request-timeout={hours}h");
        let parsed = RegisterArgs::try_parse_from(["register", flag.as_str()]);
        prop_assert!(parsed.is_err());
    }
}
