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
//! Kiali's subset/registry checks (KIA0202, 0203, 0209), the reference test and istioctl's
//! deprecation/VirtualService analyzers are not about STRICT and are not run.

use std::collections::BTreeSet;
use std::path::PathBuf;

use meshvm::doctor::{CheckOptions, Finding, Severity, run_all};
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
