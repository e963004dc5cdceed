//! Doctor against the conformance cases of istioctl 1.5's mTLS analyzer, `istioctl authn tls-check`
//! 1.4 and Kiali's STRICT-related validations, mapped to doctor's check ids.
//!
//! Each case loads its manifests the way `doctor -f` does (fixtures) or builds them from the
//! objects `EXPECTED.yaml` writes out (Kiali's Go-built cases), runs every check, and compares the
//! `fail`/`warn` findings of the checks the upstream checker maps to (on the objects upstream
//! asserts on) with the upstream expectation mapped to our ids:
//!
//! | upstream | doctor |
//! |---|---|
//! | IST0113 MTLSPolicyConflict | `mtls.policy-consistency` (fail) |
//! | IST0115 DestinationRuleUsesMTLSForWorkloadWithoutSidecar | `mtls.default-dr` (warn) |
//! | KIA0201 multimatch | `mtls.dr-overlap` (warn) |
//! | KIA0204 trafficpolicy.notlssettings | `mtls.dr-missing-tls` (warn for hosts the source has no Service for, fail for in-mesh Services) |
//! | KIA0205–0208, 0401, 0501, 0505, 0506 | `mtls.policy-consistency` (fail) |
//!
//! Deviations (each is asserted as doctor's actual result in [`DEVIATIONS`]):
//!
//! | case | doctor | upstream | why |
//! |---|---|---|---|
//! | 1.5 files with auto mTLS off and no `*.local` rule | extra `mtls.default-dr` fail | nothing | doctor is a STRICT pre-flight: with auto mTLS off and no mesh-wide ISTIO_MUTUAL rule, turning STRICT on refuses every call; the analyzer only reports conflicts present today |
//! | mtls-with-port.yaml | no finding on `Policy my-namespace/default` | IST0113 on the Policy too | the DestinationRule exists and decides the port; doctor reports the conflict once, on the object to change (`DestinationRule my-namespace/default`, port 8081 plaintext) |
//! | mtls-no-sidecar.yaml | IST0115 as a warn | error | calls to sidecar-less Services fail with or without STRICT, and the fix for it (DISABLE rules) is not part of the STRICT pre-flight; a warn keeps `--fix` runs green |
//! | Kiali KIA0201 wildcard vs host / `*` vs `*.ns` / shared subset with a wildcard rule | no `mtls.dr-overlap` | KIA0201 | Pilot picks the most specific host, so a wildcard rule and a host rule never compete; only identical hosts do |
//! | Kiali KIA0201 `host1` vs `host1.test` | no `mtls.dr-overlap` | KIA0201 | Istio expands only dotless short names: `host1.test` is not `host1.test.svc.cluster.local` |
//! | Kiali KIA0204 on `bookinfo2/reviews2` (host of bookinfo, no tls) | no `mtls.dr-missing-tls` | KIA0204 | without it, clients in bookinfo2 would resolve `bookinfo/reviews` (no tls either), not a mutual rule: it overrides nothing |
//! | Kiali multi-control-plane root namespaces | one root namespace per cluster | per-namespace root map | doctor reads one meshConfig rootNamespace; `istio-system-1/2` PAs are judged as namespace-level (still flagged, as KIA0401 expects) |
//! | tls-check 1.4 rows (server HTTP, client HTTP, OK) | `mtls.dr-conflict` fail | OK | tls-check judges the state today; doctor judges it under STRICT, where a DISABLE rule to an in-mesh host is refused |
//!
//! [`pilot_rules_per_release`] checks doctor against Pilot itself: one case per rule that
//! `doctor/mesh.rs` and `mtls.policy-consistency` model, at the release and source line they cite
//! (istio/istio@<tag> file:line). Where istioctl or Kiali disagree with Pilot (the KIA0201 rows
//! above: wildcard vs host, short names; the tls-check rows judged today), Pilot wins.
//!
//! Kiali's subset/registry checks (KIA0202, 0203, 0209), the reference test and istioctl's
//! deprecation/VirtualService analyzers are not about STRICT and are not run.

use std::collections::BTreeSet;
use std::path::PathBuf;

use meshvm::doctor::{Breaks, CheckOptions, Finding, Severity, run_all};
use meshvm::snapshot::{Obj, Snapshot};
use serde_json::Value;

/// `(check id, severity, object)`.
type Flag = (String, Severity, String);

/// Documented deviations: `(case, kind, check, severity, object)` where kind is `extra` (doctor
/// reports it, upstream does not), `missing` (upstream reports it, doctor does not) or
/// `severity` (both report it, doctor at this severity).
const DEVIATIONS: &[(&str, &str, &str, Severity, &str)] = &[
    (
        "istio-1.5/mtls-no-dr.yaml",
        "extra",
        "mtls.default-dr",
        Severity::Fail,
        "",
    ),
    (
        "istio-1.5/mtls-no-policy.yaml",
        "extra",
        "mtls.default-dr",
        Severity::Fail,
        "",
    ),
    (
        "istio-1.5/mtls-exports.yaml",
        "extra",
        "mtls.default-dr",
        Severity::Fail,
        "",
    ),
    (
        "istio-1.5/mtls-meshpolicy.yaml",
        "extra",
        "mtls.default-dr",
        Severity::Fail,
        "",
    ),
    (
        "istio-1.5/mtls-meshpolicy-permissive.yaml",
        "extra",
        "mtls.default-dr",
        Severity::Fail,
        "",
    ),
    (
        "istio-1.5/mtls-with-port.yaml",
        "extra",
        "mtls.default-dr",
        Severity::Fail,
        "",
    ),
    (
        "istio-1.5/mtls-with-port.yaml",
        "missing",
        "mtls.policy-consistency",
        Severity::Fail,
        "Policy my-namespace/default",
    ),
    (
        "istio-1.5/mtls-no-sidecar.yaml",
        "severity",
        "mtls.default-dr",
        Severity::Warn,
        "DestinationRule istio-system/default",
    ),
    (
        "kiali/TestMultiHostMatchInvalidShortFormat",
        "missing",
        "mtls.dr-overlap",
        Severity::Warn,
        "DestinationRule test/rule1",
    ),
    (
        "kiali/TestMultiHostMatchInvalidShortFormat",
        "missing",
        "mtls.dr-overlap",
        Severity::Warn,
        "DestinationRule test/rule2",
    ),
    (
        "kiali/TestMultiHostMatchWildcardInvalid",
        "missing",
        "mtls.dr-overlap",
        Severity::Warn,
        "DestinationRule test/rule2",
    ),
    (
        "kiali/TestMultiHostMatchBothWildcardInvalid",
        "missing",
        "mtls.dr-overlap",
        Severity::Warn,
        "DestinationRule test/rule2",
    ),
    (
        "kiali/TestMultiHostMatchDifferentSubsets#2",
        "missing",
        "mtls.dr-overlap",
        Severity::Warn,
        "*",
    ),
    (
        "kiali/TestNamespacemTLSEnabledDRWithoutTrafficPolicyExportedWithout",
        "missing",
        "mtls.dr-missing-tls",
        Severity::Warn,
        "DestinationRule bookinfo2/reviews2",
    ),
];

fn conformance(rel: &str) -> PathBuf {
    kube_sim::testenv::conformance(rel)
}

fn yaml_file(rel: &str) -> Value {
    let text = std::fs::read_to_string(conformance(rel)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn opts(auto_mtls: Option<bool>) -> CheckOptions {
    CheckOptions {
        auto_mtls,
        // 2026-01-01: fixed, so certificate validity never makes these cases flaky.
        now: Some(1_767_225_600),
        ..CheckOptions::default()
    }
}

/// The `fail`/`warn` findings of `checks`, optionally only on some objects.
fn flags(
    findings: &[Finding],
    checks: &[&str],
    objects: Option<&BTreeSet<String>>,
) -> BTreeSet<Flag> {
    findings
        .iter()
        .filter(|f| {
            checks.contains(&f.check) && matches!(f.severity, Severity::Fail | Severity::Warn)
        })
        .filter(|f| objects.is_none_or(|o| o.contains(&f.object)))
        .map(|f| (f.check.to_string(), f.severity, f.object.clone()))
        .collect()
}

fn map_code(code: &str) -> Option<(&'static str, Severity)> {
    Some(match code {
        "IST0115" => ("mtls.default-dr", Severity::Fail),
        "KIA0201" => ("mtls.dr-overlap", Severity::Warn),
        "KIA0204" => ("mtls.dr-missing-tls", Severity::Warn),
        "IST0113" | "KIA0205" | "KIA0206" | "KIA0207" | "KIA0208" | "KIA0401" | "KIA0501"
        | "KIA0505" | "KIA0506" => ("mtls.policy-consistency", Severity::Fail),
        _ => return None,
    })
}

/// Apply the documented deviations of `case` to the mapped upstream expectation.
fn expected_with_deviations(
    case: &str,
    mut expected: BTreeSet<Flag>,
    used: &mut BTreeSet<usize>,
) -> BTreeSet<Flag> {
    for (i, (c, kind, check, severity, object)) in DEVIATIONS.iter().enumerate() {
        if *c != case {
            continue;
        }
        used.insert(i);
        match *kind {
            "extra" => {
                expected.insert(((*check).to_string(), *severity, (*object).to_string()));
            }
            "missing" => {
                let before = expected.len();
                expected.retain(|(ch, _, ob)| !(ch == check && (*object == "*" || ob == object)));
                assert!(
                    expected.len() < before,
                    "{case}: deviation {object} removes nothing"
                );
            }
            "severity" => {
                let hit = expected
                    .iter()
                    .find(|(ch, _, ob)| ch == check && ob == object)
                    .cloned();
                let hit = hit
                    .unwrap_or_else(|| panic!("{case}: no expectation to re-grade for {object}"));
                expected.remove(&hit);
                expected.insert(((*check).to_string(), *severity, (*object).to_string()));
            }
            other => panic!("unknown deviation kind {other}"),
        }
    }
    expected
}

/// Compare, collecting mismatches instead of stopping at the first.
fn compare(
    case: &str,
    got: &BTreeSet<Flag>,
    expected: BTreeSet<Flag>,
    used: &mut BTreeSet<usize>,
    errors: &mut Vec<String>,
) {
    let expected = expected_with_deviations(case, expected, used);
    if *got != expected {
        errors.push(format!(
            "{case}:\n  doctor:   {got:?}\n  expected: {expected:?}"
        ));
    }
}

/// `DestinationRule default.istio-system` (1.5's `<Kind> <name>.<namespace>`) → `DestinationRule istio-system/default`.
fn istio15_object(resource: &str) -> String {
    let (kind, rest) = resource.split_once(' ').unwrap();
    match rest.split_once('.') {
        Some((name, ns)) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {rest}"),
    }
}

#[test]
fn istio_1_5_mtls_analyzer() {
    let expected_file = yaml_file("analyzers/istio-1.5-mtls/EXPECTED.yaml");
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    let mut ran = 0;
    for case in expected_file["cases"].as_array().unwrap() {
        if case["analyzer"] != "auth.MTLSAnalyzer" {
            continue; // deprecation and VirtualService analyzers: not about STRICT
        }
        let files: Vec<PathBuf> = case["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| conformance(&format!("analyzers/istio-1.5-mtls/{}", f.as_str().unwrap())))
            .collect();
        // The analyzer harness's mesh config has enableAutoMtls false unless the case names
        // mesh-with-automtls.yaml (a bare MeshConfig, not a Kubernetes object: an override here).
        let auto = case.get("meshConfig").map(|_| true);
        let snap = Snapshot::from_files(&files).unwrap();
        let report = run_all(&[snap], &opts(auto));
        let got = flags(
            &report.findings,
            &["mtls.policy-consistency", "mtls.default-dr"],
            None,
        );
        let expected: BTreeSet<Flag> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let (check, sev) = map_code(e["code"].as_str().unwrap()).unwrap();
                (
                    check.to_string(),
                    sev,
                    istio15_object(e["resource"].as_str().unwrap()),
                )
            })
            .collect();
        let name = format!(
            "istio-1.5/{}{}",
            case["files"][0].as_str().unwrap(),
            if auto.is_some() { "+automtls" } else { "" }
        );
        compare(&name, &got, expected, &mut used, &mut errors);
        ran += 1;
    }
    assert_eq!(ran, 11, "every MTLSAnalyzer case runs");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let unused: Vec<_> = DEVIATIONS
        .iter()
        .enumerate()
        .filter(|(i, d)| d.0.starts_with("istio-1.5/") && !used.contains(i))
        .collect();
    assert!(
        unused.is_empty(),
        "deviations that no case used: {unused:?}"
    );
}

/// Kiali object names are `<Kind> <namespace>/<name>`, as ours.
fn kiali_flags(expected: &Value) -> BTreeSet<Flag> {
    expected
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    let (check, sev) = map_code(e["code"].as_str()?)?;
                    Some((
                        check.to_string(),
                        sev,
                        e["object"].as_str().unwrap().to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

const KIALI_STRICT_FIXTURE_CHECKERS: [&str; 3] = [
    "destinationrules.DisabledMeshWideMTLSChecker",
    "peerauthentications.DisabledMeshWideChecker",
    "peerauthentications.DisabledNamespaceWideChecker",
];

#[test]
fn kiali_fixtures() {
    let expected_file = yaml_file("kiali/EXPECTED.yaml");
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    let mut ran = 0;
    for case in expected_file["fixtures"].as_array().unwrap() {
        let checker = case["checker"].as_str().unwrap_or_default();
        if !KIALI_STRICT_FIXTURE_CHECKERS.contains(&checker) {
            continue; // NoDestinationChecker (KIA0203), references, the orphan fixture
        }
        let file = case["file"].as_str().unwrap();
        let snap = Snapshot::from_files(&[conformance(&format!("kiali/{file}"))]).unwrap();
        // These checkers take no autoMtls input: doctor's default for an unknown era applies.
        let report = run_all(&[snap], &opts(None));
        let subject: BTreeSet<String> = [case["subject"].as_str().unwrap().to_string()].into();
        let got = flags(
            &report.findings,
            &["mtls.policy-consistency"],
            Some(&subject),
        );
        compare(
            &format!("kiali/{file}"),
            &got,
            kiali_flags(&case["expected"]),
            &mut used,
            &mut errors,
        );
        ran += 1;
    }
    assert_eq!(ran, 13, "every STRICT-related Kiali fixture runs");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Kiali's in-scope Go-built checkers.
const KIALI_STRICT_CHECKERS: [&str; 9] = [
    "destinationrules.MeshWideMTLSChecker",
    "destinationrules.NamespaceWideMTLSChecker",
    "destinationrules.DisabledNamespaceWideMTLSChecker",
    "destinationrules.TrafficPolicyChecker",
    "destinationrules.MultiMatchChecker",
    "peerauthentications.MeshMtlsChecker",
    "peerauthentications.NamespaceMtlsChecker",
    "checkers.PeerAuthenticationChecker",
    "destinationrules.DisabledMeshWideMTLSChecker",
];

/// The doctor check a Kiali checker maps to.
fn checker_id(checker: &str) -> &'static str {
    match checker {
        "destinationrules.TrafficPolicyChecker" => "mtls.dr-missing-tls",
        "destinationrules.MultiMatchChecker" => "mtls.dr-overlap",
        _ => "mtls.policy-consistency",
    }
}

fn object_key(v: &Value) -> String {
    Obj::new(v.clone()).reference()
}

/// The snapshot of an inline case: validated objects win over context objects of the same identity
/// (Kiali passes them as separate inputs; a cluster can hold only one).
fn inline_snapshot(validated: &[Value], context: &[Value]) -> Snapshot {
    let mut snap = Snapshot::from_yaml("").unwrap();
    let mut seen = BTreeSet::new();
    for v in validated.iter().chain(context) {
        if seen.insert(object_key(v)) {
            snap.push(Obj::new(v.clone()));
        }
    }
    snap
}

/// `validationCount` of a case, or of its step.
fn steps_count(case: &Value, step: usize) -> Option<usize> {
    let source = case.get("steps").and_then(|s| s.get(step)).unwrap_or(case);
    source
        .get("validationCount")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
}

fn list(case: &Value, key: &str) -> Vec<Value> {
    case.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn kiali_inline_cases() {
    let expected_file = yaml_file("kiali/EXPECTED.yaml");
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    let mut ran = 0;
    for case in expected_file["inline_cases"].as_array().unwrap() {
        let checker = case["checker"].as_str().unwrap();
        if !KIALI_STRICT_CHECKERS.contains(&checker) {
            continue;
        }
        let test = case["test"].as_str().unwrap();
        let autos: Vec<Option<bool>> = match case.get("autoMtls") {
            Some(Value::Bool(b)) => vec![Some(*b)],
            Some(Value::Array(a)) => a.iter().map(Value::as_bool).collect(),
            // Group checkers (TrafficPolicy, MultiMatch) ignore autoMtls; Kiali's tests run with it off.
            _ => vec![Some(false)],
        };
        let context_keys = [
            "mtlsDestinationRules",
            "peerAuthentications",
            "meshPeerAuthentications",
            "services",
            "serviceEntries",
            "virtualServices",
        ];
        let steps: Vec<(Vec<Value>, Value)> = match case.get("steps").and_then(Value::as_array) {
            Some(steps) => {
                let mut acc = Vec::new();
                steps
                    .iter()
                    .map(|s| {
                        acc.extend(list(s, "destinationRules"));
                        acc.extend(list(s, "add"));
                        (acc.clone(), s["expected"].clone())
                    })
                    .collect()
            }
            None => vec![(list(case, "destinationRules"), case["expected"].clone())],
        };
        for (step, (drs, expected)) in steps.iter().enumerate() {
            let mut validated: Vec<Value> = case
                .get("subject")
                .filter(|s| s.is_object())
                .into_iter()
                .cloned()
                .collect();
            validated.extend(drs.iter().cloned());
            let context: Vec<Value> = context_keys.iter().flat_map(|k| list(case, k)).collect();
            // Objects asserted on: the subject, the validated rules, and (dispatch cases) the PAs.
            let mut asserted: BTreeSet<String> = validated.iter().map(object_key).collect();
            if checker == "checkers.PeerAuthenticationChecker" {
                asserted.extend(list(case, "peerAuthentications").iter().map(object_key));
            }
            for auto in &autos {
                let snap = inline_snapshot(&validated, &context);
                let report = run_all(&[snap], &opts(*auto));
                let got = flags(&report.findings, &[checker_id(checker)], Some(&asserted));
                let name = if steps.len() > 1 {
                    format!("kiali/{test}#{}", step + 1)
                } else {
                    format!("kiali/{test}")
                };
                if expected == "non-empty" {
                    let exp = expected_with_deviations(
                        &name,
                        BTreeSet::from([(
                            "mtls.dr-overlap".to_string(),
                            Severity::Warn,
                            "*".to_string(),
                        )]),
                        &mut used,
                    );
                    if got.is_empty() != exp.is_empty() {
                        errors.push(format!(
                            "{name}: doctor {got:?}, expected non-empty (after deviations: {exp:?})"
                        ));
                    }
                    continue;
                }
                if checker == "checkers.PeerAuthenticationChecker" {
                    // {object, contains, absent}: KIA0401/0506 are mesh-level, KIA0501/0505 namespace-level findings.
                    for e in expected.as_array().unwrap() {
                        let object = e["object"].as_str().unwrap();
                        let on: Vec<&Finding> = report
                            .findings
                            .iter()
                            .filter(|f| {
                                f.object == object
                                    && f.check == "mtls.policy-consistency"
                                    && f.severity == Severity::Fail
                            })
                            .collect();
                        let level = |code: &str| match code {
                            "KIA0401" | "KIA0506" => "mesh-wide",
                            _ => "namespace ",
                        };
                        for code in e
                            .get("contains")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                        {
                            // Deviation (one root namespace): a second control plane's PA is judged at namespace level.
                            let multi_root = test == "TestPeerAuthMultiCPCorrectRootResolution"
                                && object.contains("istio-system-");
                            if on.is_empty()
                                || (!multi_root
                                    && !on.iter().any(|f| f.message.contains(level(code))))
                            {
                                errors.push(format!(
                                    "kiali/{test}: {object} should carry {code}: {on:?}"
                                ));
                            }
                        }
                        for code in e
                            .get("absent")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                        {
                            if on.iter().any(|f| f.message.contains(level(code)))
                                && !(code == "KIA0501"
                                    && on.iter().all(|f| f.message.contains("mesh-wide")))
                            {
                                errors.push(format!(
                                    "kiali/{test}: {object} should not carry {code}: {on:?}"
                                ));
                            }
                        }
                    }
                    continue;
                }
                let count = steps_count(case, step);
                let listed = kiali_flags(expected);
                if count.is_some_and(|c| c > listed.len()) {
                    // Upstream lists some flagged objects and counts all of them.
                    let listed = expected_with_deviations(&name, listed, &mut used);
                    if !listed.is_subset(&got) || Some(got.len()) != count {
                        errors.push(format!(
                            "{name}: doctor {got:?}, expected ⊇ {listed:?} and {count:?} in all"
                        ));
                    }
                    continue;
                }
                compare(&name, &got, listed, &mut used, &mut errors);
            }
        }
        ran += 1;
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(ran, 65, "every STRICT-related Kiali inline case runs");
    let unused: Vec<_> = DEVIATIONS
        .iter()
        .enumerate()
        .filter(|(i, d)| d.0.starts_with("kiali/Test") && !used.contains(i))
        .collect();
    assert!(
        unused.is_empty(),
        "deviations that no case used: {unused:?}"
    );
}

/// `istioctl authn tls-check` (1.4) goldens: rows of HOST:PORT, STATUS, SERVER, CLIENT, AUTHN
/// POLICY, DESTINATION RULE. Each row is rebuilt as a mesh (1.4 Policy for the server mode, a
/// DestinationRule for the client mode) and judged: today's consistency is
/// `mtls.policy-consistency`'s verdict (agrees with STATUS), STRICT's is `mtls.dr-conflict`'s.
#[test]
fn tls_check_1_4_goldens() {
    for golden in ["multiAuth.txt", "singleAuth.txt"] {
        let text =
            std::fs::read_to_string(conformance(&format!("tls-check-1.4/{golden}"))).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("HOST:PORT"));
        for row in lines {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let [host_port, status, server, client, policy, rule] = cols[..] else {
                panic!("{row}")
            };
            let (host, port) = host_port.split_once(':').unwrap();
            let (policy_name, policy_ns) = policy.split_once('/').unwrap();
            let (rule_name, rule_ns) = rule.split_once('/').unwrap();
            assert_eq!(policy_ns, rule_ns);
            let peers = if server == "mTLS" {
                "[{mtls: {}}]"
            } else {
                "[]"
            };
            let mode = if client == "mTLS" {
                "ISTIO_MUTUAL"
            } else {
                "DISABLE"
            };
            let yaml = format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {rule_ns}, labels: {{istio-injection: enabled}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {host}, namespace: {rule_ns}}}\nspec: {{selector: {{app: {host}}}, ports: [{{port: {port}}}]}}\n---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {{name: {policy_name}, namespace: {policy_ns}}}\nspec: {{targets: [{{name: {host}}}], peers: {peers}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: {rule_name}, namespace: {rule_ns}}}\nspec: {{host: {host}, trafficPolicy: {{tls: {{mode: {mode}}}}}}}\n"
            );
            let snap = Snapshot::from_yaml(&yaml).unwrap();
            let report = run_all(&[snap], &opts(Some(false)));
            let conflict_today = report
                .findings
                .iter()
                .any(|f| f.check == "mtls.policy-consistency" && f.severity == Severity::Fail);
            assert_eq!(conflict_today, status != "OK", "{golden} {row}");
            // Deviation (documented above): under STRICT the DISABLE rule is refused.
            let under_strict = report.findings.iter().any(|f| {
                f.check == "mtls.dr-conflict"
                    && f.severity == Severity::Fail
                    && f.object == format!("DestinationRule {rule_ns}/{rule_name}")
            });
            assert_eq!(under_strict, client == "HTTP", "{golden} {row}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pilot's rules, release by release: one case per rule doctor's mesh model cites.
// ---------------------------------------------------------------------------------------------

/// The control plane of `release` (doctor reads the release from the image tag): 1.4 runs
/// Pilot and Citadel, later releases istiod.
fn control_plane(release: &str) -> String {
    use std::fmt::Write as _;
    let names: &[&str] = if release.starts_with("1.4.") {
        &["istio-pilot", "istio-citadel"]
    } else {
        &["istiod"]
    };
    let mut out = String::new();
    for name in names {
        let _ = write!(
            out,
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: istio-system}}\nspec: {{template: {{spec: {{containers: [{{name: discovery, image: 'docker.io/istio/pilot:{release}'}}]}}}}}}\n"
        );
    }
    out
}

/// Service `s` in `a` (port 80 `http` → target 8080) with one labelled sidecar Pod; sidecar
/// clients in `b`, `c` and the root namespace (a gateway); `vm`: a WorkloadEntry of `s` with
/// these extra labels (modern releases only).
fn workloads(vm: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for ns in ["a", "b", "c"] {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{istio-injection: enabled}}}}\n"
        );
    }
    out += "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n";
    out += "---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {selector: {app: s}, ports: [{name: http, port: 80, targetPort: 8080}]}\n";
    out += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a, labels: {app: s, security.istio.io/tlsMode: istio}}\nspec: {containers: [{name: app}, {name: istio-proxy}]}\n";
    for (ns, name) in [
        ("b", "client"),
        ("c", "client"),
        ("istio-system", "gateway"),
    ] {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}, security.istio.io/tlsMode: istio}}}}\nspec: {{containers: [{{name: app}}, {{name: istio-proxy}}]}}\n"
        );
    }
    if let Some(labels) = vm {
        let _ = write!(
            out,
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: vm, namespace: a}}\nspec: {{address: 10.0.0.9, labels: {{app: s{labels}}}}}\n"
        );
    }
    out
}

/// A DestinationRule created on day `age` of January 2020 (Pilot merges same-host rules oldest first).
fn pdr(ns: &str, name: &str, age: u8, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '2020-01-0{age}T00:00:00Z'}}\nspec: {spec}\n"
    )
}

fn ppa(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// A 1.4 `authentication.istio.io/v1alpha1` Policy (`MeshPolicy` when `ns` is empty).
fn policy14(ns: &str, name: &str, age: u8, spec: &str) -> String {
    if ns.is_empty() {
        return format!(
            "---\napiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: {name}, creationTimestamp: '2019-01-0{age}T00:00:00Z'}}\nspec: {spec}\n"
        );
    }
    format!(
        "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '2019-01-0{age}T00:00:00Z'}}\nspec: {spec}\n"
    )
}

const MESH_MUTUAL: &str = "{host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}";
const S_HOST: &str = "s.a.svc.cluster.local";

/// One expected `fail`/`warn` finding: severity, object, when it breaks, and a message fragment (`""`: any).
type Verdict = (Severity, &'static str, Option<Breaks>, &'static str);

struct PilotCase {
    rule: &'static str,
    release: &'static str,
    /// The citation, as the code comment that models the rule gives it.
    source: &'static str,
    manifests: String,
    auto_mtls: bool,
    check: &'static str,
    /// Every `fail`/`warn` finding of `check` (none: the check passes).
    expected: Vec<Verdict>,
}

fn pilot_cases() -> Vec<PilotCase> {
    use Severity::{Fail, Warn};
    let strict_workload = ppa(
        "a",
        "s-strict",
        "{selector: {matchLabels: {app: s}}, mtls: {mode: STRICT}}",
    );
    let disable_workload = ppa(
        "a",
        "s-off",
        "{selector: {matchLabels: {app: s}}, mtls: {mode: DISABLE}}",
    );
    let strict_target14 = policy14(
        "a",
        "s-strict",
        1,
        "{targets: [{name: s}], peers: [{mtls: {}}]}",
    );
    let private_root = pdr(
        "istio-system",
        "private",
        2,
        &format!("{{host: {S_HOST}, exportTo: ['.'], trafficPolicy: {{tls: {{mode: DISABLE}}}}}}"),
    );
    let mesh_mutual = pdr("istio-system", "default", 1, MESH_MUTUAL);
    let same_host = |old: &str, new: &str| {
        pdr(
            "a",
            "old",
            1,
            &format!("{{host: s, trafficPolicy: {{tls: {{mode: {old}}}}}}}"),
        ) + &pdr(
            "a",
            "new",
            2,
            &format!("{{host: s, trafficPolicy: {{tls: {{mode: {new}}}}}}}"),
        )
    };
    let export_b = pdr(
        "a",
        "x",
        2,
        "{host: s, exportTo: [b], trafficPolicy: {tls: {mode: DISABLE}}}",
    );
    let private_by_default = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    defaultDestinationRuleExportTo: ['.']\n";
    let ns_rule_a = pdr(
        "a",
        "x",
        2,
        "{host: s, trafficPolicy: {tls: {mode: DISABLE}}}",
    );
    let selector_rule = pdr(
        "a",
        "sel",
        1,
        "{host: s, workloadSelector: {matchLabels: {app: legacy}}, trafficPolicy: {tls: {mode: DISABLE}}}",
    ) + &pdr(
        "a",
        "all",
        2,
        "{host: s, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
    );
    let s_mutual = pdr(
        "a",
        "s",
        1,
        "{host: s, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
    );
    let s_disable = pdr(
        "a",
        "s",
        1,
        "{host: s, trafficPolicy: {tls: {mode: DISABLE}}}",
    );
    let permissive_ns = ppa("a", "default", "{mtls: {mode: PERMISSIVE}}");
    let strict_mesh = ppa("istio-system", "default", "{mtls: {mode: STRICT}}");
    let cp = control_plane;
    // 1.4 without a MeshPolicy is plaintext mesh-wide (a mutual mesh rule fails): PERMISSIVE.
    let mesh14 = policy14("", "default", 1, "{peers: [{mtls: {mode: PERMISSIVE}}]}");
    // `defaultDestinationRuleExportTo` also applies to the root's rule: export it explicitly.
    let mesh_mutual_public = pdr(
        "istio-system",
        "default",
        1,
        "{host: '*.local', exportTo: ['*'], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
    );
    vec![
        PilotCase {
            rule: "1.4: a root-namespace proxy ignores the root's private (exportTo: [.]) rule",
            release: "1.4.2",
            source: "istio/istio@1.4.2 pilot/pkg/model/push_context.go:633",
            manifests: cp("1.4.2")
                + &workloads(None)
                + &mesh14
                + &strict_target14
                + &mesh_mutual
                + &private_root,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![],
        },
        PilotCase {
            rule: "modern: a root-namespace proxy reads the root's private rules first",
            release: "1.8.0",
            source: "istio/istio@1.8.0 pilot/pkg/model/push_context.go:757-773",
            manifests: cp("1.8.0")
                + &workloads(None)
                + &strict_workload
                + &mesh_mutual
                + &private_root,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule istio-system/private",
                Some(Breaks::Now),
                "clients in namespace istio-system)",
            )],
        },
        PilotCase {
            rule: "modern (1.22): a root-namespace proxy reads the root's private rules first",
            release: "1.22.0",
            source: "istio/istio@1.8.0 pilot/pkg/model/push_context.go:766-773",
            manifests: cp("1.22.0")
                + &workloads(None)
                + &strict_workload
                + &mesh_mutual
                + &private_root,
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule istio-system/private",
                Some(Breaks::Now),
                "clients in namespace istio-system)",
            )],
        },
        PilotCase {
            rule: "same-host rules merge oldest first: the older trafficPolicy wins (mutual)",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/model/destination_rule.go:40-120",
            manifests: cp("1.22.0")
                + &workloads(None)
                + &strict_workload
                + &same_host("ISTIO_MUTUAL", "DISABLE"),
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![],
        },
        PilotCase {
            rule: "same-host rules merge oldest first: the older trafficPolicy wins (plaintext)",
            release: "1.4.2",
            source: "istio/istio@1.4.2 pilot/pkg/model/destination_rule.go:33-62",
            manifests: cp("1.4.2")
                + &workloads(None)
                + &strict_target14
                + &same_host("DISABLE", "ISTIO_MUTUAL"),
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/old",
                Some(Breaks::Now),
                "(DISABLE)",
            )],
        },
        PilotCase {
            rule: "same-host rules: the newer trafficPolicy is ignored, so both rules warn",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/model/destination_rule.go:40-120",
            manifests: cp("1.22.0") + &workloads(None) + &same_host("ISTIO_MUTUAL", "DISABLE"),
            auto_mtls: true,
            check: "mtls.dr-overlap",
            expected: vec![
                (
                    Warn,
                    "DestinationRule a/new",
                    Some(Breaks::WhenStrict),
                    "this rule's is ignored",
                ),
                (
                    Warn,
                    "DestinationRule a/old",
                    Some(Breaks::WhenStrict),
                    "keeps this rule's trafficPolicy",
                ),
            ],
        },
        PilotCase {
            rule: "exportTo: the most specific host first, then its visibility",
            release: "1.8.0",
            source: "istio/istio@1.8.0 pilot/pkg/model/push_context.go:807-817",
            manifests: cp("1.8.0") + &workloads(None) + &strict_workload + &mesh_mutual + &export_b,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/x",
                Some(Breaks::Now),
                "(clients in namespace b)",
            )],
        },
        PilotCase {
            rule: "1.4 reads exportTo[0] only, and anything but `.` is public",
            release: "1.4.2",
            source: "istio/istio@1.4.2 pilot/pkg/model/push_context.go:1313",
            manifests: cp("1.4.2")
                + &workloads(None)
                + &mesh14
                + &strict_target14
                + &mesh_mutual
                + &export_b,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/x",
                Some(Breaks::Now),
                "Policy a/s-strict requires mTLS",
            )],
        },
        PilotCase {
            rule: "meshConfig defaultDestinationRuleExportTo [.]: rules without exportTo are private",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/model/push_context.go:1796",
            manifests: cp("1.22.0")
                + &workloads(None)
                + &strict_workload
                + &mesh_mutual_public
                + &ns_rule_a
                + private_by_default,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/x",
                Some(Breaks::Now),
                "(clients in namespace a)",
            )],
        },
        PilotCase {
            rule: "meshConfig defaultDestinationRuleExportTo unset: rules without exportTo are public",
            release: "1.4.2",
            source: "istio/istio@1.4.2 pilot/pkg/model/push_context.go:1111-1118",
            manifests: cp("1.4.2")
                + &workloads(None)
                + &mesh14
                + &strict_target14
                + &mesh_mutual
                + &ns_rule_a,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/x",
                Some(Breaks::Now),
                "Policy a/s-strict requires mTLS",
            )],
        },
        PilotCase {
            rule: "1.14+: a workloadSelector rule is private to the workloads it selects",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/model/sidecar.go:668-690",
            manifests: cp("1.22.0") + &workloads(None) + &strict_workload + &selector_rule,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![],
        },
        PilotCase {
            rule: "before 1.14 workloadSelector is ignored: the rules merge, the older (plaintext) policy wins",
            release: "1.13.0",
            source: "istio/istio@1.8.0 pilot/pkg/model/destination_rule.go:35-84",
            manifests: cp("1.13.0") + &workloads(None) + &strict_workload + &selector_rule,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(Fail, "DestinationRule a/sel", Some(Breaks::Now), "")],
        },
        PilotCase {
            rule: "PeerAuthentication: the namespace's beats the mesh's",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/security/authn/policy_applier.go:474-507",
            manifests: cp("1.22.0") + &workloads(Some("")) + &strict_mesh + &permissive_ns,
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![(Fail, "WorkloadEntry a/vm", Some(Breaks::WhenStrict), "")],
        },
        PilotCase {
            rule: "PeerAuthentication: a workload selector beats the namespace's",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/model/authentication.go:229-262",
            manifests: cp("1.22.0") + &workloads(Some("")) + &permissive_ns + &strict_workload,
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![(Fail, "WorkloadEntry a/vm", Some(Breaks::Now), "")],
        },
        PilotCase {
            rule: "portLevelMtls applies to the target port",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/security/authn/policy_applier.go:412-418",
            manifests: cp("1.22.0")
                + &workloads(Some(""))
                + &ppa(
                    "a",
                    "s-port",
                    "{selector: {matchLabels: {app: s}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {'8080': {mode: STRICT}}}",
                ),
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "WorkloadEntry a/vm",
                Some(Breaks::Now),
                "port 8080 of",
            )],
        },
        PilotCase {
            rule: "portLevelMtls on the Service port (not the target port) does not apply",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/security/authn/policy_applier.go:412-418",
            manifests: cp("1.22.0")
                + &workloads(Some(""))
                + &ppa(
                    "a",
                    "s-port",
                    "{selector: {matchLabels: {app: s}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {'80': {mode: STRICT}}}",
                ),
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![(Fail, "WorkloadEntry a/vm", Some(Breaks::WhenStrict), "")],
        },
        PilotCase {
            rule: "1.4 Policy: the oldest applicable per port (an older port-less DISABLE covers every port)",
            release: "1.4.2",
            source: "istio/istio@1.4.2 pilot/pkg/model/push_context.go:1223-1265",
            manifests: cp("1.4.2")
                + &workloads(None)
                + &policy14("a", "old", 1, "{targets: [{name: s}], peers: []}")
                + &policy14(
                    "a",
                    "new",
                    2,
                    "{targets: [{name: s, ports: [{number: 80}]}], peers: [{mtls: {}}]}",
                )
                + &s_mutual,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/s",
                Some(Breaks::Now),
                "Policy a/old",
            )],
        },
        PilotCase {
            rule: "1.4 Policy: a service Policy beats the namespace `default`",
            release: "1.4.2",
            source: "istio/istio@1.4.2 pilot/pkg/model/push_context.go:1223-1265",
            manifests: cp("1.4.2")
                + &workloads(None)
                + &policy14("a", "default", 1, "{peers: []}")
                + &strict_target14
                + &s_mutual,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![],
        },
        PilotCase {
            rule: "1.4 Policy: the namespace `default` beats the MeshPolicy",
            release: "1.4.2",
            source: "istio/istio@1.4.2 pilot/pkg/model/push_context.go:1223-1265",
            manifests: cp("1.4.2")
                + &workloads(None)
                + &policy14("", "default", 1, "{peers: [{mtls: {}}]}")
                + &policy14("a", "default", 1, "{peers: []}")
                + &s_mutual,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            // The MeshPolicy's own verdict: STRICT elsewhere, no mesh-wide rule, auto mTLS off.
            expected: vec![
                (
                    Fail,
                    "DestinationRule a/s",
                    Some(Breaks::Now),
                    "Policy a/default (DISABLE)",
                ),
                (Fail, "MeshPolicy default", Some(Breaks::Now), ""),
            ],
        },
        PilotCase {
            rule: "auto mTLS sends mTLS only to security.istio.io/tlsMode=istio endpoints",
            release: "1.22.0",
            source: "istio/istio@1.8.0 pilot/pkg/networking/core/v1alpha3/cluster.go:839-856",
            manifests: cp("1.22.0") + &workloads(Some("")) + &permissive_ns,
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "WorkloadEntry a/vm",
                Some(Breaks::WhenStrict),
                "no security.istio.io/tlsMode=istio label",
            )],
        },
        PilotCase {
            rule: "auto mTLS to a labelled endpoint is mTLS",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/networking/core/cluster_tls.go:459",
            manifests: cp("1.22.0")
                + &workloads(Some(", security.istio.io/tlsMode: istio"))
                + &permissive_ns,
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![],
        },
        PilotCase {
            rule: "ISTIO_MUTUAL to a DISABLE port fails",
            release: "1.22.0",
            source: "istio/istio@1.22.0 pilot/pkg/security/authn/policy_applier.go:440-470",
            manifests: cp("1.22.0") + &workloads(None) + &disable_workload + &s_mutual,
            auto_mtls: true,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/s",
                Some(Breaks::Now),
                "disables mTLS",
            )],
        },
        PilotCase {
            rule: "plaintext to a STRICT port fails",
            release: "1.13.0",
            source: "istio/istio@1.13.0 pilot/pkg/networking/core/v1alpha3/cluster_builder.go:802-834",
            manifests: cp("1.13.0") + &workloads(None) + &strict_workload + &s_disable,
            auto_mtls: false,
            check: "mtls.policy-consistency",
            expected: vec![(
                Fail,
                "DestinationRule a/s",
                Some(Breaks::Now),
                "requires mTLS",
            )],
        },
    ]
}

/// Every Pilot rule doctor models, at the release it cites, through `doctor -f`'s entry point.
#[test]
fn pilot_rules_per_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut errors = Vec::new();
    let cases = pilot_cases();
    for (n, case) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case-{n}.yaml"));
        std::fs::write(&path, &case.manifests).unwrap();
        let snap = Snapshot::from_files(&[path]).unwrap();
        let report = run_all(&[snap], &opts(Some(case.auto_mtls)));
        let name = format!("{} ({}, {})", case.rule, case.release, case.source);
        let of_check: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.check == case.check)
            .collect();
        if of_check.is_empty() || of_check.iter().any(|f| f.severity == Severity::Skip) {
            errors.push(format!("{name}: {} did not run: {of_check:?}", case.check));
            continue;
        }
        let got: BTreeSet<(Severity, String, Option<Breaks>)> = of_check
            .iter()
            .filter(|f| matches!(f.severity, Severity::Fail | Severity::Warn))
            .map(|f| (f.severity, f.object.clone(), f.breaks))
            .collect();
        let expected: BTreeSet<(Severity, String, Option<Breaks>)> = case
            .expected
            .iter()
            .map(|(s, o, b, _)| (*s, (*o).to_string(), *b))
            .collect();
        if got != expected {
            errors.push(format!(
                "{name}:\n  doctor:   {got:?}\n  expected: {expected:?}\n  findings: {:#?}",
                of_check
                    .iter()
                    .filter(|f| matches!(f.severity, Severity::Fail | Severity::Warn))
                    .map(|f| &f.message)
                    .collect::<Vec<_>>()
            ));
            continue;
        }
        for (_, object, _, fragment) in &case.expected {
            if !of_check
                .iter()
                .any(|f| f.object == *object && f.message.contains(fragment))
            {
                errors.push(format!("{name}: no finding on {object} says {fragment:?}"));
            }
        }
    }
    assert!(cases.len() >= 20);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
