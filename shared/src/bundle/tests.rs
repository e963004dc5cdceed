//! Unit tests of bundle: options, plan on inline objects, writing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use clap::Parser as _;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::*;
use crate::istio::Era;
use crate::pki::testutil::{KeyKind, TestCa, days, now};

fn args(extra: &[&str]) -> BundleArgs {
    let mut argv = vec!["x", "--vm-namespace", "expandvm", "-d", "out"];
    argv.extend_from_slice(extra);
    BundleArgs::try_parse_from(argv).unwrap()
}

fn opts(extra: &[&str]) -> Options {
    Options::resolve(args(extra)).unwrap()
}

fn usage_err(extra: &[&str]) -> UsageError {
    Options::resolve(args(extra)).unwrap_err()
}

#[test]
fn resolve_validates_flags() {
    let o = opts(&[
        "--gateway-service",
        "gw.mesh",
        "--service-cidr",
        "10.96.0.0/12, fd00::/108",
        "--revision",
        "default",
    ]);
    assert_eq!(
        o.gateway_service(Era::Legacy),
        Some(("mesh".into(), "gw".into()))
    );
    assert_eq!(o.service_cidr.as_deref(), Some("10.96.0.0/12,fd00::/108"));
    assert_eq!(o.revision, None, "the default revision is no revision");
    assert_eq!(o.token_seconds, 3600);
    let d = opts(&[]);
    assert_eq!(
        d.gateway_service(Era::Modern),
        Some(("istio-system".into(), "istio-eastwestgateway".into()))
    );
    assert_eq!(
        d.gateway_service(Era::Legacy),
        Some(("istio-system".into(), "istio-ingressgateway".into()))
    );

    for (flags, want) in [
        (
            &["--service-cidr", "10.0.0.1/16"][..],
            "did you mean 10.0.0.0/16",
        ),
        (&["--service-cidr", "10.0.0.0"][..], "is not a CIDR"),
        (&["--service-cidr", "10.0.0.0/33"][..], "prefix length"),
        (
            &["--gateway-ip", "gw.example.com"][..],
            "is not an IP address",
        ),
        (&["--internal-ip", "vm"][..], "is not an IP address"),
        (&["--token-duration", "5m"][..], "10m or more"),
        (&["--inbound-ports", "0"][..], "0 is not a port"),
        (
            &["--gateway-service", "a.b.c"][..],
            "NAME or NAME.NAMESPACE",
        ),
        (
            &["--revision", "Bad_Rev"][..],
            "--revision \"Bad_Rev\" is not a DNS-1123 label",
        ),
        (&["--cluster-id", " "][..], "--cluster-id is empty"),
        (
            &["-s", "Bad SA"][..],
            "--service-account \"Bad SA\" is not a DNS-1123 subdomain",
        ),
    ] {
        let err = usage_err(flags);
        assert!(err.to_string().contains(want), "{flags:?}: {err}");
        assert!(err.hint.is_some(), "{flags:?} has a hint");
    }
    let err = Options::resolve(
        BundleArgs::try_parse_from(["x", "--vm-namespace", "Bad_NS", "-d", "o"]).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--vm-namespace"), "{err}");
    assert!(
        BundleArgs::try_parse_from([
            "x",
            "--vm-namespace",
            "v",
            "-d",
            "o",
            "--no-gateway",
            "--gateway-ip",
            "1.2.3.4"
        ])
        .is_err()
    );
}

#[test]
fn archive_inside_the_output_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    std::fs::create_dir(&out).unwrap();
    let archive = out.join("b.tar.gz");
    let err = Options::resolve(
        BundleArgs::try_parse_from([
            "x",
            "--vm-namespace",
            "v",
            "-d",
            out.to_str().unwrap(),
            "--archive",
            archive.to_str().unwrap(),
        ])
        .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("outside --output-dir"), "{err}");
}

#[test]
fn era_specific_flags_are_refused_in_the_other_era() {
    let err = opts(&["--workload-group", "g", "--inbound-ports", "80"])
        .check_era(Era::Legacy)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("--workload-group only apply to the modern era"),
        "{err}"
    );
    let err = opts(&[]).check_era(Era::Legacy).unwrap_err();
    assert!(err.to_string().contains("--inbound-ports"), "{err}");
    let err = opts(&["--service", "s", "--workload-group", "g"])
        .check_era(Era::Modern)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("--service only applies to the legacy era"),
        "{err}"
    );
    let err = opts(&[]).check_era(Era::Modern).unwrap_err();
    assert!(err.to_string().contains("--workload-group"), "{err}");
    assert!(
        opts(&["--inbound-ports", "80"])
            .check_era(Era::Legacy)
            .is_ok()
    );
}

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

#[test]
fn gateway_address_prefers_the_load_balancer_ip() {
    let both = service(
        json!({"spec": {"externalIPs": ["198.51.100.1"]}, "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
    );
    assert_eq!(gateway_address(&both), Ok("203.0.113.7".parse().unwrap()));
    let external = service(json!({"spec": {"externalIPs": ["198.51.100.1"]}}));
    assert_eq!(
        gateway_address(&external),
        Ok("198.51.100.1".parse().unwrap())
    );
    let host =
        service(json!({"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}}));
    assert_eq!(
        gateway_address(&host),
        Err(GatewayProblem::Hostname("lb.example.com".into()))
    );
    assert_eq!(
        gateway_address(&service(json!({}))),
        Err(GatewayProblem::NoAddress)
    );
    let bad = service(json!({"status": {"loadBalancer": {"ingress": [{"ip": "x"}]}}}));
    assert!(matches!(
        gateway_address(&bad),
        Err(GatewayProblem::Invalid(_))
    ));
}

#[test]
fn service_cidr_inference() {
    assert_eq!(
        infer_service_cidr("172.16.0.1").as_deref(),
        Some("172.16.0.0/16")
    );
    assert_eq!(
        infer_service_cidr("fd00:10:96::1").as_deref(),
        Some("fd00:10:96::/108")
    );
    assert_eq!(infer_service_cidr("None"), None);
}

/// A Citadel-like identity for expandvm/expandvm signed by `ca`.
fn identity(ca: &TestCa, ns: &str, sa: &str) -> BTreeMap<String, Vec<u8>> {
    let leaf = ca.leaf(KeyKind::P256, ns, sa);
    BTreeMap::from([
        ("root-cert.pem".into(), ca.cert_pem.clone().into_bytes()),
        ("cert-chain.pem".into(), leaf.cert_pem.into_bytes()),
        ("key.pem".into(), leaf.key_pem.into_bytes()),
    ])
}

fn gateway(ip: &str) -> Service {
    service(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}))
}

fn legacy_observed(ca: &TestCa) -> Observed {
    Observed {
        era: Some(Era::Legacy),
        service_account_exists: true,
        gateway_service: Some(gateway("35.187.36.54")),
        identity: Some(identity(ca, "expandvm", "expandvm")),
        service_cidrs: Some(vec!["172.16.0.0/16".into()]),
        kubernetes_ip: Some("172.16.0.1".into()),
        ..Observed::default()
    }
}

fn file<'a>(b: &'a Bundle, name: &str) -> &'a BundleFile {
    b.files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn text(b: &Bundle, name: &str) -> String {
    String::from_utf8(file(b, name).data.clone()).unwrap()
}

#[test]
fn legacy_plan_is_the_runbook() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let observed = legacy_observed(&ca);
    let b = plan(&observed, &opts(&["--inbound-ports", "80"]), now()).unwrap();
    let names: Vec<&str> = b.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "cert-chain.pem",
            "cluster.env",
            "gwip.txt",
            "hosts",
            "install.sh",
            "key.pem",
            "root-cert.pem"
        ]
    );
    assert_eq!(
        text(&b, "cluster.env"),
        "ISTIO_CP_AUTH=MUTUAL_TLS\nISTIO_SERVICE=expandvm\nISTIO_SERVICE_CIDR=172.16.0.0/16\nISTIO_INBOUND_PORTS=80\nISTIO_NAMESPACE=expandvm\n"
    );
    assert_eq!(text(&b, "gwip.txt"), "35.187.36.54");
    assert!(
        text(&b, "hosts").starts_with("35.187.36.54 istio-citadel istio-citadel.istio-system\n")
    );
    assert_eq!(file(&b, "key.pem").mode, 0o600);
    assert_eq!(file(&b, "install.sh").mode, 0o755);
    assert_eq!(file(&b, "root-cert.pem").data, ca.cert_pem.as_bytes());
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let sums = text(&b, "SHA256SUMS");
    assert_eq!(sums.lines().count(), 7);
    assert!(sums.contains("  key.pem\n") && !sums.contains("SHA256SUMS"));
}

#[test]
fn legacy_hosts_carry_the_exposed_global_services_after_the_control_plane() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let mut observed = legacy_observed(&ca);
    observed.global_hosts = "127.255.0.3 httpbin.bar.global\n".into();
    let b = plan(&observed, &opts(&["--inbound-ports", "80"]), now()).unwrap();
    let hosts = text(&b, "hosts");
    assert!(
        hosts.starts_with("35.187.36.54 istio-citadel istio-citadel.istio-system\n"),
        "{hosts}"
    );
    assert!(
        hosts.ends_with("istio-policy.istio-system\n127.255.0.3 httpbin.bar.global\n"),
        "{hosts}"
    );
    assert!(file(&b, "hosts").what.contains("1 .global service"));
}

#[test]
fn legacy_service_cidr_comes_from_flag_api_or_inference() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let mut observed = legacy_observed(&ca);
    let o = opts(&["--inbound-ports", "80", "--service-cidr", "10.0.0.0/8"]);
    assert!(
        text(&plan(&observed, &o, now()).unwrap(), "cluster.env")
            .contains("ISTIO_SERVICE_CIDR=10.0.0.0/8\n")
    );
    observed.service_cidrs = None;
    let b = plan(&observed, &opts(&["--inbound-ports", "80"]), now()).unwrap();
    assert!(text(&b, "cluster.env").contains("ISTIO_SERVICE_CIDR=172.16.0.0/16\n"));
    assert_eq!(b.warnings.len(), 1);
    assert!(
        b.warnings[0].contains("assuming ISTIO_SERVICE_CIDR=172.16.0.0/16")
            && b.warnings[0].contains("--service-cidr"),
        "{:?}",
        b.warnings
    );
    assert_eq!(b.service_cidr.as_ref().unwrap().source, CidrSource::Guessed);
    observed.kubernetes_ip = None;
    let err = plan(&observed, &opts(&["--inbound-ports", "80"]), now()).unwrap_err();
    assert!(matches!(err, Error::ServiceCidrUnknown), "{err}");
    assert!(err.hint().unwrap().contains("--service-cidr"));
}

/// Flag, then the ServiceCIDR API, then the API server's refusal, then a guess that says why.
#[test]
fn service_cidr_sources_in_order() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let o = opts(&["--inbound-ports", "80"]);
    let source = |observed: &Observed, o: &Options| {
        let b = plan(observed, o, now()).unwrap();
        let c = b.service_cidr.clone().unwrap();
        assert!(
            text(&b, "cluster.env").contains(&format!("ISTIO_SERVICE_CIDR={}\n", c.cidr)),
            "{c:?}"
        );
        (c, b.warnings)
    };
    let mut observed = legacy_observed(&ca);
    observed.service_cidr_version = Some("v1beta1".into());
    observed.cidr_probe = Some(cidr::Probe::Range {
        cidrs: vec!["10.96.0.0/12".into()],
        dry_run: true,
        maybe_partial: false,
    });
    let (c, w) = source(
        &observed,
        &opts(&["--inbound-ports", "80", "--service-cidr", "10.0.0.0/8"]),
    );
    assert_eq!(
        (c.cidr.as_str(), c.source),
        ("10.0.0.0/8", CidrSource::Flag)
    );
    assert!(w.is_empty());
    let (c, w) = source(&observed, &o);
    assert_eq!(
        (c.cidr.as_str(), c.source),
        ("172.16.0.0/16", CidrSource::ServiceCidrApi)
    );
    assert_eq!(
        c.detail,
        "from the ServiceCIDR API (networking.k8s.io/v1beta1 ServiceCIDR kubernetes)"
    );
    assert!(w.is_empty());
    observed.service_cidrs = None;
    let (c, w) = source(&observed, &o);
    assert_eq!(
        (c.cidr.as_str(), c.source),
        ("10.96.0.0/12", CidrSource::ApiserverRefusal)
    );
    assert!(c.detail.contains("dry-run"), "{}", c.detail);
    assert!(w.is_empty(), "a range the server named is no guess: {w:?}");
    if let Some(cidr::Probe::Range { maybe_partial, .. }) = &mut observed.cidr_probe {
        *maybe_partial = true;
    }
    let (c, w) = source(&observed, &o);
    assert_eq!(c.source, CidrSource::ApiserverRefusal);
    assert!(
        w.len() == 1 && w[0].contains("kubectl get servicecidrs"),
        "{w:?}"
    );
    observed.cidr_probe = Some(cidr::Probe::Unknown(
        "the API server refused clusterIP 0.0.0.0 without naming its range (MultiCIDRServiceAllocator)".into(),
    ));
    let (c, w) = source(&observed, &o);
    assert_eq!(
        (c.cidr.as_str(), c.source),
        ("172.16.0.0/16", CidrSource::Guessed)
    );
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("without naming its range")
            && w[0].contains("assuming ISTIO_SERVICE_CIDR=172.16.0.0/16"),
        "the warning says why nothing better was found: {w:?}"
    );
}

/// `istio.<sa>` must be issued under the root in cacerts: Citadel 1.4 keeps the CA it loaded at
/// start, so after cacerts changes the secret carries the old root until Citadel restarts.
#[test]
fn legacy_identity_from_an_old_root_is_refused_with_the_restart_commands() {
    let old = TestCa::flat(KeyKind::P256, "Old Root");
    let new = TestCa::flat(KeyKind::P256, "New Root");
    let cacerts = |ca: &TestCa| {
        BTreeMap::from([
            ("ca-cert.pem".to_owned(), ca.cert_pem.clone().into_bytes()),
            ("ca-key.pem".to_owned(), ca.key_pem.clone().into_bytes()),
            ("root-cert.pem".to_owned(), ca.cert_pem.clone().into_bytes()),
            (
                "cert-chain.pem".to_owned(),
                ca.cert_pem.clone().into_bytes(),
            ),
        ])
    };
    let mut observed = legacy_observed(&old);
    observed.cacerts = Some(cacerts(&old));
    let o = opts(&["--inbound-ports", "80"]);
    assert!(
        plan(&observed, &o, now()).is_ok(),
        "issued under the root in cacerts"
    );
    observed.cacerts = Some(cacerts(&new));
    observed.waited = Some(std::time::Duration::from_secs(60));
    let ctx = Options {
        context: Some("east".into()),
        kube: crate::flags::KubeArgs {
            kubeconfig: Some("/tmp/kc".into()),
            ..crate::flags::KubeArgs::default()
        },
        ..opts(&["--inbound-ports", "80", "--istio-namespace", "mesh"])
    };
    let err = plan(&observed, &ctx, now()).unwrap_err();
    let Error::IdentityOldRoot {
        restart, prepare, ..
    } = &err
    else {
        panic!("{err}")
    };
    let text = err.to_string();
    assert!(
        text.starts_with("secret expandvm/istio.expandvm is issued under root CN=Old Root")
            && text.contains("but cacerts in namespace mesh holds root CN=New Root")
            && text.matches("SHA-256").count() == 2
            && text.contains("after waiting 60s"),
        "{text}"
    );
    assert_eq!(
        restart,
        "kubectl rollout restart deployment/istio-citadel -n mesh --kubeconfig /tmp/kc --context east"
    );
    assert_eq!(
        prepare,
        "kubectl meshvm prepare -n expandvm --restart-control-plane --yes --istio-namespace mesh --kubeconfig /tmp/kc --context east"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains(restart.as_str()) && hint.contains(prepare.as_str()),
        "{hint}"
    );
    // --wait 0 says nothing about waiting.
    observed.waited = Some(std::time::Duration::ZERO);
    let err = plan(&observed, &o, now()).unwrap_err();
    assert!(!err.to_string().contains("waiting"), "{err}");
    // Citadel running with --self-signed-ca=true ignores cacerts: its own root is the one.
    observed.citadel_self_signed = true;
    let b = plan(&observed, &o, now()).unwrap();
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains("--self-signed-ca=true and ignores it")),
        "{:?}",
        b.warnings
    );
    // cacerts hidden by RBAC: bundled, with a warning that the root was not checked.
    observed.citadel_self_signed = false;
    observed.cacerts = None;
    observed.cacerts_unreadable = Some("forbidden".into());
    let b = plan(&observed, &o, now()).unwrap();
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains("cannot read secret istio-system/cacerts (forbidden)")),
        "{:?}",
        b.warnings
    );
    // A cacerts without root-cert.pem: Citadel cannot load it; the bundle says it did not check.
    observed.cacerts_unreadable = None;
    observed.cacerts = Some(BTreeMap::from([("ca-cert.pem".to_owned(), b"x".to_vec())]));
    let b = plan(&observed, &o, now()).unwrap();
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains("has no usable root-cert.pem")),
        "{:?}",
        b.warnings
    );
}

#[test]
fn a_missing_identity_after_waiting_says_how_long_and_what_to_do() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let mut observed = legacy_observed(&ca);
    observed.identity = None;
    observed.waited = Some(std::time::Duration::from_secs(90));
    let err = plan(&observed, &opts(&["--inbound-ports", "80"]), now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret expandvm/istio.expandvm not found after waiting 90s: Citadel has not issued an identity for ServiceAccount expandvm/expandvm"
    );
    assert!(
        err.hint().unwrap().contains("longer --wait"),
        "{:?}",
        err.hint()
    );
    observed.waited = Some(std::time::Duration::ZERO);
    let err = plan(&observed, &opts(&["--inbound-ports", "80"]), now()).unwrap_err();
    assert!(
        err.hint().unwrap().contains("--wait 2m"),
        "{:?}",
        err.hint()
    );
    // No ServiceAccount: Citadel will never issue it; bundle says so instead of waiting.
    observed.service_account_exists = false;
    let o = opts(&["--inbound-ports", "80", "-s", "vm-sa"]);
    let err = plan(&observed, &o, now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret expandvm/istio.vm-sa not found: ServiceAccount expandvm/vm-sa does not exist, so Citadel issues no identity for it"
    );
    assert!(
        err.hint()
            .unwrap()
            .starts_with("create it with `kubectl meshvm prepare -n expandvm -s vm-sa`"),
        "{:?}",
        err.hint()
    );
}

#[test]
fn legacy_identity_problems_say_to_restart_citadel() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let o = opts(&["--inbound-ports", "80"]);
    let check = |observed: &Observed, want: &str| {
        let err = plan(observed, &o, now()).unwrap_err();
        assert!(matches!(err, Error::Identity { .. }), "{err}");
        assert!(err.to_string().contains(want), "{err}");
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("rollout restart deployment istio-citadel")
                && hint.contains("delete secret istio.expandvm"),
            "{hint}"
        );
    };
    // Expired.
    let mut expired = legacy_observed(&ca);
    let old = ca.leaf_with(
        KeyKind::P256,
        "spiffe://cluster.local/ns/expandvm/sa/expandvm",
        now() - days(100),
        now() - days(10),
    );
    let id = expired.identity.as_mut().unwrap();
    id.insert("cert-chain.pem".into(), old.cert_pem.into_bytes());
    id.insert("key.pem".into(), old.key_pem.into_bytes());
    check(&expired, "expired");
    // Key of another certificate.
    let mut mismatch = legacy_observed(&ca);
    let other = ca.leaf(KeyKind::P256, "expandvm", "expandvm");
    mismatch
        .identity
        .as_mut()
        .unwrap()
        .insert("key.pem".into(), other.key_pem.into_bytes());
    check(&mismatch, "key");
    // Signed by another root.
    let mut foreign = legacy_observed(&ca);
    let stranger = TestCa::flat(KeyKind::P256, "Other Root");
    foreign
        .identity
        .as_mut()
        .unwrap()
        .insert("root-cert.pem".into(), stranger.cert_pem.into_bytes());
    check(&foreign, "root-cert.pem");
    // Another identity.
    let mut wrong_sa = legacy_observed(&ca);
    wrong_sa.identity = Some(identity(&ca, "expandvm", "other"));
    check(&wrong_sa, "expandvm");
    // Missing key.
    let mut partial = legacy_observed(&ca);
    partial.identity.as_mut().unwrap().remove("key.pem");
    check(&partial, "has no key.pem");
    // Missing secret.
    let mut missing = legacy_observed(&ca);
    missing.identity = None;
    let err = plan(&missing, &o, now()).unwrap_err();
    assert!(matches!(err, Error::IdentityMissing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("secret expandvm/istio.expandvm not found"),
        "{err}"
    );
}

#[test]
fn gateway_errors_name_the_service_and_hint_gateway_ip() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let o = opts(&["--inbound-ports", "80"]);
    let mut observed = legacy_observed(&ca);
    observed.gateway_service = Some(service(
        json!({"status": {"loadBalancer": {"ingress": [{"hostname": "a.elb.example.com"}]}}}),
    ));
    let err = plan(&observed, &o, now()).unwrap_err();
    assert!(matches!(err, Error::GatewayHostname { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("istio-system/istio-ingressgateway"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("--gateway-ip"));
    observed.gateway_service = Some(service(json!({})));
    let err = plan(&observed, &o, now()).unwrap_err();
    assert!(matches!(err, Error::GatewayNoAddress { .. }), "{err}");
    assert!(err.hint().unwrap().contains("--gateway-ip"));
    observed.gateway_service = None;
    let err = plan(&observed, &o, now()).unwrap_err();
    assert!(matches!(err, Error::GatewayMissing { .. }), "{err}");
    // --gateway-ip needs no Service at all.
    let b = plan(
        &observed,
        &opts(&["--inbound-ports", "80", "--gateway-ip", "192.0.2.9"]),
        now(),
    )
    .unwrap();
    assert_eq!(text(&b, "gwip.txt"), "192.0.2.9");
}

fn conformance() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/workload-entry-configure")
}

fn golden_observed(case: &str, mesh: &str) -> Observed {
    let dir = conformance().join(case);
    let wg: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("workloadgroup.yaml")).unwrap())
            .unwrap();
    Observed {
        era: Some(Era::Modern),
        workload_group: Some(wg),
        mesh_config: Some(BTreeMap::from([("mesh".into(), mesh.to_owned())])),
        root_cert: Some(BTreeMap::from([(
            "root-cert.pem".into(),
            "fake-CA-cert".into(),
        )])),
        token: Some(String::new()),
        ..Observed::default()
    }
}

/// The istioctl goldens, from the pure plan (the kube-sim test repeats this end to end).
#[test]
fn modern_plan_matches_istioctl_goldens() {
    for (case, flags) in [
        (
            "vmconfig/ipv4",
            &[
                "--internal-ip",
                "10.10.10.10",
                "--gateway-ip",
                "10.10.10.11",
                "--cluster-id",
                "Kubernetes",
                "--revision",
                "rev-1",
            ][..],
        ),
        (
            "vmconfig/ipv6",
            &[
                "--internal-ip",
                "fd00:10:96::1",
                "--gateway-ip",
                "fd00:10:96::2",
                "--cluster-id",
                "Kubernetes",
                "--revision",
                "rev-1",
            ][..],
        ),
        (
            "vmconfig-nil-proxy-metadata",
            &[
                "--internal-ip",
                "10.10.10.10",
                "--cluster-id",
                "Kubernetes",
                "--no-gateway",
            ][..],
        ),
    ] {
        let dir = conformance().join(case);
        let mesh = std::fs::read_to_string(dir.join("meshconfig.yaml"))
            .unwrap_or_else(|_| "defaultConfig: {}\n".into());
        let mut all = vec![
            "--vm-namespace",
            "bar",
            "-d",
            "out",
            "--workload-group",
            "foo",
        ];
        all.extend_from_slice(flags);
        let o =
            Options::resolve(BundleArgs::try_parse_from(std::iter::once("x").chain(all)).unwrap())
                .unwrap();
        let b = plan(&golden_observed(case, &mesh), &o, now()).unwrap();
        for name in [
            "cluster.env",
            "mesh.yaml",
            "hosts",
            "root-cert.pem",
            "istio-token",
        ] {
            let golden = std::fs::read_to_string(dir.join(format!("{name}.golden"))).unwrap();
            assert_eq!(text(&b, name), golden, "{case}: {name}");
        }
        assert_eq!(file(&b, "istio-token").mode, 0o600);
    }
}

/// Modern: `--inbound-ports` that disagree with the WorkloadGroup's ports warn, naming both.
#[test]
fn inbound_ports_that_differ_from_the_workload_group_warn() {
    let mesh = "defaultConfig: {}\n";
    let mut observed = golden_observed("vmconfig-nil-proxy-metadata", mesh);
    observed.workload_group.as_mut().unwrap()["spec"]["template"]["ports"] =
        json!({"http": 8080, "grpc": 9090});
    let o = |ports: &[&str]| {
        let mut flags = vec![
            "--workload-group",
            "foo",
            "--no-gateway",
            "--cluster-id",
            "c",
        ];
        flags.extend_from_slice(ports);
        Options {
            vm_namespace: "bar".into(),
            ..opts(&flags)
        }
    };
    // (The golden's fake root certificate brings its own warning.)
    let ports_warnings = |b: &Bundle| -> Vec<String> {
        b.warnings
            .iter()
            .filter(|w| w.contains("--inbound-ports"))
            .cloned()
            .collect()
    };
    let differ = plan(&observed, &o(&["--inbound-ports", "8080"]), now()).unwrap();
    let warnings = ports_warnings(&differ);
    assert_eq!(warnings.len(), 1, "{:?}", differ.warnings);
    let w = &warnings[0];
    assert!(
        w.starts_with("--inbound-ports 8080 differ from the ports of WorkloadGroup bar/foo (grpc: 9090, http: 8080)")
            && w.contains("captures 8080 while the mesh sends traffic for 8080,9090"),
        "{w}"
    );
    assert!(text(&differ, "cluster.env").contains("ISTIO_INBOUND_PORTS='8080'"));
    // The same ports in another order, or no flag: no warning.
    for ports in [&["--inbound-ports", "9090,8080"][..], &[]] {
        let b = plan(&observed, &o(ports), now()).unwrap();
        assert!(ports_warnings(&b).is_empty(), "{ports:?}: {:?}", b.warnings);
    }
}

#[test]
fn modern_errors_name_what_is_missing() {
    let mesh = "defaultConfig: {}\n";
    let o = opts(&["--workload-group", "foo", "--no-gateway"]);
    let o = Options {
        vm_namespace: "bar".into(),
        ..o
    };
    // No --cluster-id and no injector ConfigMap.
    let err = plan(
        &golden_observed("vmconfig-nil-proxy-metadata", mesh),
        &o,
        now(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("configmap istio-system/istio-sidecar-injector not found"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("--cluster-id"));
    // The injector's cluster name is used; empty means Istio's default.
    let mut observed = golden_observed("vmconfig-nil-proxy-metadata", mesh);
    observed.injector = Some(BTreeMap::from([(
        "values".into(),
        r#"{"global":{"multiCluster":{"clusterName":"east"}}}"#.into(),
    )]));
    let b = plan(&observed, &o, now()).unwrap();
    assert!(text(&b, "cluster.env").contains("ISTIO_META_CLUSTER_ID='east'\n"));
    observed.injector = Some(BTreeMap::from([("values".into(), "{}".into())]));
    assert!(
        text(&plan(&observed, &o, now()).unwrap(), "cluster.env")
            .contains("ISTIO_META_CLUSTER_ID='Kubernetes'\n")
    );

    let o = Options {
        cluster_id: Some("c".into()),
        ..o
    };
    let mut missing = observed.clone();
    missing.workload_group = None;
    let err = plan(&missing, &o, now()).unwrap_err();
    assert!(
        matches!(err, Error::WorkloadGroupMissing { .. })
            && err.hint().unwrap().contains("prepare"),
        "{err}"
    );
    let mut missing = observed.clone();
    missing.mesh_config = None;
    assert!(
        plan(&missing, &o, now())
            .unwrap_err()
            .to_string()
            .contains("configmap istio-system/istio not found")
    );
    let mut missing = observed.clone();
    missing.root_cert = None;
    let err = plan(&missing, &o, now()).unwrap_err();
    assert!(
        err.to_string()
            .contains("configmap bar/istio-ca-root-cert not found"),
        "{err}"
    );
    let mismatch = Options {
        service_account: Some("other".into()),
        ..o.clone()
    };
    let err = plan(&observed, &mismatch, now()).unwrap_err();
    assert!(matches!(err, Error::ServiceAccountMismatch { .. }), "{err}");
    // A modern gateway with only a hostname is an error, where istioctl writes an empty hosts.
    let with_gateway = Options {
        gateway: GatewaySource::Service {
            name: None,
            namespace: None,
        },
        ..o
    };
    observed.gateway_service = Some(service(
        json!({"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}}),
    ));
    let err = plan(&observed, &with_gateway, now()).unwrap_err();
    assert!(matches!(err, Error::GatewayHostname { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("istio-system/istio-eastwestgateway"),
        "{err}"
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn legacy_bundle() -> Bundle {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    plan(
        &legacy_observed(&ca),
        &opts(&["--inbound-ports", "80"]),
        now(),
    )
    .unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn write_is_private_and_a_second_run_of_the_same_bundle_is_unchanged() {
    let b = legacy_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/expandvm");
    let written = output::write(&b, &dir, None, false).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    assert_eq!(mode(&dir.join("cluster.env")), 0o644);
    assert_eq!(mode(&dir.join("install.sh")), 0o755);
    assert_eq!(written.files.len(), b.files.len());
    assert!(written.unchanged.is_empty() && !written.is_unchanged());
    let before: Vec<(String, Vec<u8>)> = entries(&dir)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect();

    // A script run twice: the same bundle into the same folder succeeds, changing nothing.
    let again = output::write(&b, &dir, None, false).unwrap();
    assert!(again.is_unchanged(), "{:?}", again.unchanged);
    assert!(again.removed.is_empty());
    let after: Vec<(String, Vec<u8>)> = entries(&dir)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect();
    assert_eq!(before, after);
    let mut table = Vec::new();
    again
        .write_summary(&mut table, OutputFormat::Table)
        .unwrap();
    let table = String::from_utf8(table).unwrap();
    assert_eq!(
        table.matches("(unchanged)").count(),
        b.files.len(),
        "{table}"
    );
    // Nothing temporary is left in or beside it.
    assert_eq!(entries(dir.parent().unwrap()), ["expandvm"]);
    assert!(entries(&dir).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn a_different_bundle_needs_force_and_what_it_removes_is_listed() {
    let b = legacy_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("expandvm");
    output::write(&b, &dir, None, false).unwrap();
    // A modern bundle's file (e.g. an earlier bundle of another era) and another key.
    std::fs::write(dir.join("mesh.yaml"), "defaultConfig: {}\n").unwrap();
    std::fs::write(dir.join("key.pem"), "OLD KEY").unwrap();
    let err = output::write(&b, &dir, None, false).unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("holds a different bundle")
            && text.contains("key.pem differs")
            && text.contains("mesh.yaml is not in this bundle"),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("--force"));
    assert_eq!(std::fs::read(dir.join("key.pem")).unwrap(), b"OLD KEY");

    let forced = output::write(&b, &dir, None, true).unwrap();
    assert_eq!(
        forced.removed,
        [output::Removed {
            file: "mesh.yaml".into(),
            why: "a previous bundle's file that this bundle does not have".into()
        }]
    );
    assert!(!dir.join("mesh.yaml").exists());
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    assert!(!forced.unchanged.contains(&"key.pem".to_owned()));
    let mut table = Vec::new();
    forced
        .write_summary(&mut table, OutputFormat::Table)
        .unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(
        table.contains("expandvm/mesh.yaml") && table.contains("removed: a previous bundle's file"),
        "{table}"
    );
    let mut json_out = Vec::new();
    forced
        .write_summary(&mut json_out, OutputFormat::Json)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json_out).unwrap();
    assert_eq!(v["removed"][0]["file"], "mesh.yaml");
}

#[test]
fn files_no_bundle_writes_are_never_removed_not_even_with_force() {
    let b = legacy_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("expandvm");
    output::write(&b, &dir, None, false).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("key.pem"), "OLD KEY").unwrap();
    for force in [false, true] {
        let err = output::write(&b, &dir, None, force).unwrap_err();
        assert!(matches!(err, Error::OutputForeign { .. }), "{err}");
        assert!(
            err.to_string().contains("notes.txt, sub/"),
            "the error names them: {err}"
        );
        assert!(err.hint().unwrap().contains("even with --force"));
    }
    // Nothing was written.
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(dir.join("key.pem")).unwrap(), b"OLD KEY");
    // A user's folder: refused before any write too.
    let home = tmp.path().join("docs");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("report.pdf"), "x").unwrap();
    let err = output::write(&b, &home, None, true).unwrap_err();
    assert!(err.to_string().contains("report.pdf"), "{err}");
    assert_eq!(entries(&home), ["report.pdf"]);
}

#[test]
fn the_current_directory_its_parents_root_and_home_are_refused() {
    let cwd = std::env::current_dir().unwrap();
    let mut dirs = vec![
        Path::new(".").to_owned(),
        cwd.clone(),
        cwd.parent().unwrap().to_owned(),
        "/".into(),
    ];
    dirs.extend(std::env::var_os("HOME").map(std::path::PathBuf::from));
    for dir in dirs {
        let err = output::check_target(&dir).unwrap_err();
        assert!(err.is_usage(), "{}: {err}", dir.display());
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("--output-dir {} is ", dir.display()))
                && [
                    "the current directory",
                    "a parent of the current directory",
                    "the root directory",
                    "your home directory"
                ]
                .iter()
                .any(|w| text.contains(w)),
            "{text}"
        );
        assert!(err.hint().unwrap().contains("-d expandvm"));
    }
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        output::check_target(&tmp.path().join("new")).unwrap(),
        output::Existing::default()
    );
}

/// `kill -9` mid-run leaves whole files (each renamed into place) and perhaps a temporary
/// file: the re-run completes the bundle without --force and removes the leftover.
#[test]
fn a_rerun_after_an_interrupted_write_completes_it() {
    let b = legacy_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("expandvm");
    std::fs::create_dir(&dir).unwrap();
    // What an interrupted run leaves: SHA256SUMS and key.pem written, cluster.env half-written
    // under its temporary name.
    for f in b
        .files
        .iter()
        .filter(|f| ["SHA256SUMS", "key.pem"].contains(&f.name.as_str()))
    {
        std::fs::write(dir.join(&f.name), &f.data).unwrap();
    }
    let stale = ".cluster.env.meshvm-tmp-4242-abc";
    std::fs::write(dir.join(stale), "ISTIO_CP_AU").unwrap();
    let written = output::write(&b, &dir, None, false).unwrap();
    assert_eq!(written.unchanged, ["SHA256SUMS", "key.pem"]);
    assert_eq!(written.removed.len(), 1);
    assert_eq!(written.removed[0].file, stale);
    assert!(!written.is_unchanged());
    let names: Vec<String> = b.files.iter().map(|f| f.name.clone()).collect();
    assert_eq!(entries(&dir), names);
    for f in &b.files {
        assert_eq!(
            std::fs::read(dir.join(&f.name)).unwrap(),
            f.data,
            "{}",
            f.name
        );
        assert_eq!(mode(&dir.join(&f.name)), f.mode, "{}", f.name);
    }
    // An interrupted run of a different bundle (its key differs) is a different bundle.
    std::fs::write(dir.join("key.pem"), "OTHER").unwrap();
    std::fs::remove_file(dir.join("hosts")).unwrap();
    let err = output::write(&b, &dir, None, false).unwrap_err();
    assert!(err.to_string().contains("key.pem differs"), "{err}");
}

#[test]
fn an_identical_archive_is_unchanged_and_a_different_one_needs_force() {
    let b = legacy_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("expandvm");
    let archive = tmp.path().join("b.tar.gz");
    let first = output::write(&b, &dir, Some(&archive), false).unwrap();
    assert_eq!(mode(&archive), output::ARCHIVE_MODE);
    assert!(!first.archive.as_ref().unwrap().unchanged);
    let again = output::write(&b, &dir, Some(&archive), false).unwrap();
    assert!(again.archive.as_ref().unwrap().unchanged && again.is_unchanged());

    std::fs::write(&archive, "old").unwrap();
    let err = output::write(&b, &dir, Some(&archive), false).unwrap_err();
    assert!(matches!(err, Error::ArchiveExists { .. }), "{err}");
    assert!(err.hint().unwrap().contains("--force"));
    assert_eq!(std::fs::read(&archive).unwrap(), b"old");
    output::write(&b, &dir, Some(&archive), true).unwrap();
    assert_ne!(std::fs::read(&archive).unwrap(), b"old");
    let err = output::write(&b, &tmp.path().join("third"), Some(tmp.path()), true).unwrap_err();
    assert!(err.to_string().contains("cannot write"), "{err}");

    // An archive that cannot be written leaves no directory behind.
    let blocked = tmp.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let fresh = tmp.path().join("fresh");
    let err = output::write(&b, &fresh, Some(&blocked.join("x.tar.gz")), false).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!fresh.exists());
    assert!(
        entries(tmp.path())
            .iter()
            .all(|n| !n.contains("meshvm-tmp")),
        "{:?}",
        entries(tmp.path())
    );
}

#[test]
fn archives_are_byte_identical_under_one_private_folder_and_carry_modes() {
    let b = legacy_bundle();
    let one = output::archive_bytes(&b.files, "expandvm").unwrap();
    let two = output::archive_bytes(&b.files, "expandvm").unwrap();
    assert_eq!(one, two);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(one.as_slice()));
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        seen.push((
            entry.path().unwrap().display().to_string(),
            h.mode().unwrap(),
            h.mtime().unwrap(),
            h.uid().unwrap(),
        ));
    }
    assert_eq!(seen[0], ("expandvm/".into(), 0o700, 0, 0), "{seen:?}");
    assert_eq!(seen[1].0, "expandvm/SHA256SUMS");
    assert!(
        seen.contains(&("expandvm/key.pem".into(), 0o600, 0, 0)),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.0.starts_with("expandvm/")),
        "{seen:?}"
    );
    assert_eq!(seen.len(), b.files.len() + 1);
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    // The folder is the bundle directory's name.
    assert_eq!(output::top_folder(Path::new("out/expandvm")), "expandvm");
    assert_eq!(output::top_folder(Path::new("vm-files/")), "vm-files");
}

#[test]
fn summary_lists_files_and_never_their_content() {
    let ca = TestCa::flat(KeyKind::P256, "Root CA");
    let b = plan(
        &legacy_observed(&ca),
        &opts(&["--inbound-ports", "80"]),
        now(),
    )
    .unwrap();
    let written = Written {
        era: b.era,
        output_dir: "expandvm".into(),
        files: b.files.clone(),
        unchanged: Vec::new(),
        removed: Vec::new(),
        archive: None,
        service_cidr: b.service_cidr.clone(),
    };
    let key = text(&b, "key.pem");
    let body = key.lines().nth(1).unwrap();
    let mut table = Vec::new();
    written
        .write_summary(&mut table, OutputFormat::Table)
        .unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.starts_with("FILE"), "{table}");
    assert!(
        table.contains("expandvm/key.pem") && table.contains("0600"),
        "{table}"
    );
    let mut json_out = Vec::new();
    written
        .write_summary(&mut json_out, OutputFormat::Json)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json_out).unwrap();
    assert_eq!(v["era"], "legacy");
    assert_eq!(
        v["serviceCidr"],
        json!({"cidr": "172.16.0.0/16", "source": "service-cidr-api",
               "detail": "from the ServiceCIDR API (networking.k8s.io/v1 ServiceCIDR kubernetes)"}),
        "-o json says where ISTIO_SERVICE_CIDR came from"
    );
    assert!(
        table.contains("ISTIO_SERVICE_CIDR from the ServiceCIDR API"),
        "{table}"
    );
    let key_row = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "key.pem")
        .unwrap();
    assert_eq!(key_row["mode"], "0600");
    let mut yaml_out = Vec::new();
    written
        .write_summary(&mut yaml_out, OutputFormat::Yaml)
        .unwrap();
    let yaml = String::from_utf8(yaml_out).unwrap();
    let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, v, "-o yaml carries the same data as -o json");
    for out in [
        table,
        String::from_utf8(json_out).unwrap(),
        yaml,
        format!("{b:?}"),
    ] {
        assert!(!out.contains(body), "key material leaked");
    }
}
