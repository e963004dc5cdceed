//! The cluster's Service CIDR for the legacy `ISTIO_SERVICE_CIDR`, and where it came from:
//! `--service-cidr`, else the ServiceCIDR API, else the API server's own refusal of an
//! out-of-range ClusterIP, else a guess around the `kubernetes` Service's IP (said so).
//!
//! The refusal's text changed over the releases (k8s-versions.md §11, quoted in the tests):
//! it names the range from Kubernetes ~1.9 to 1.32, and not at all before, nor from 1.33 where the
//! MultiCIDRServiceAllocator answers "the provided network does not match the current range". A
//! dry-run create is range-checked only from the alloc.go era (~1.23: `allocIPs` hands the
//! dry-run allocator the same `contains()` check); before, `Create` skipped allocation under
//! dry-run (k/k PR #67038), so the dry-run succeeds and only a real create is refused.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use serde::Serialize;

use super::options::parse_service_cidr;
use crate::kube::{Connection, FIELD_MANAGER, Request};

/// Where `ISTIO_SERVICE_CIDR` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CidrSource {
    /// `--service-cidr`.
    Flag,
    /// The `kubernetes` ServiceCIDR object (`networking.k8s.io`).
    ServiceCidrApi,
    /// The API server named its range when it refused an out-of-range ClusterIP.
    ApiserverRefusal,
    /// A guess around the `kubernetes` Service's ClusterIP.
    Guessed,
}

/// The Service CIDR bundle writes, with its source (in `-o json` as `serviceCidr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceCidr {
    /// Comma-separated CIDRs.
    pub cidr: String,
    /// Where they came from.
    pub source: CidrSource,
    /// The source in words, for the stderr note.
    pub detail: String,
}

/// What the refusal of an out-of-range ClusterIP says about the Service range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The range(s) named in "The range of valid IPs is <CIDR>" (Kubernetes ~1.9 to 1.32, and
    /// later with MultiCIDRServiceAllocator off).
    Range(Vec<String>),
    /// "the provided network does not match the current range": the MultiCIDRServiceAllocator
    /// (default from 1.33) names no range (k/k `pkg/registry/core/service/ipallocator/
    /// cidrallocator.go` `ErrMismatchedNetwork`).
    Mismatched,
    /// Any other text (before ~1.9 "provided IP is not in the valid range" alone).
    NoRange,
}

/// Read the Service range out of an API server's refusal (`Status.message`). Pure.
pub fn parse_refusal(message: &str) -> Refusal {
    // k/k PR #52693: `"provided IP is not in the valid range. The range of valid IPs is %s"`,
    // kept by every later allocator (k8s-versions.md §11).
    const RANGE: &str = "The range of valid IPs is ";
    let mut cidrs: Vec<String> = Vec::new();
    for (at, _) in message.match_indices(RANGE) {
        let rest = &message[at + RANGE.len()..];
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'))
            .collect();
        let token = token.trim_end_matches(['.', ':']);
        if let Ok(cidr) = parse_service_cidr(token)
            && !cidrs.contains(&cidr)
        {
            cidrs.push(cidr);
        }
    }
    if !cidrs.is_empty() {
        return Refusal::Range(cidrs);
    }
    if message.contains("the provided network does not match the current range") {
        return Refusal::Mismatched;
    }
    Refusal::NoRange
}

/// The ClusterIP the probe asks for: the unspecified address of the `kubernetes` Service's
/// family. It is the first address of any CIDR that could hold it, and every allocator leaves
/// the first address out ("The first and last addresses of the CIDR are omitted", k/k
/// `pkg/registry/core/service/ipallocator/allocator.go` `contains`; the IPAddress allocator
/// reserves the network address of both families), while Service validation only asks for a
/// valid IP (`validation.IsValidIP`; the unspecified-address check, `ValidateNonSpecialIP`, is
/// for Endpoints and externalIPs). So no release can allocate it: every create is refused.
pub fn probe_ip(kubernetes_ip: Option<&str>) -> &'static str {
    match kubernetes_ip.and_then(|ip| ip.parse::<IpAddr>().ok()) {
        Some(IpAddr::V6(_)) => "::",
        _ => "0.0.0.0",
    }
}

/// What asking the API server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The server named its range when refusing the probe Service.
    Range {
        /// The CIDRs, validated.
        cidrs: Vec<String>,
        /// Whether the dry-run create already was refused (no real create was sent).
        dry_run: bool,
        /// The server may hold several ServiceCIDRs of which the refusal names one (see
        /// [`may_hold_several_ranges`]).
        maybe_partial: bool,
    },
    /// The server did not reveal its range; why, for the warning.
    Unknown(String),
}

/// With the MultiCIDRServiceAllocator (on by default from Kubernetes 1.33: k8s-versions.md §5) a
/// cluster may hold several ServiceCIDRs, and a dry-run create is range-checked by one of their
/// allocators only ("DryRun returns a random allocator", k/k
/// `pkg/registry/core/service/ipallocator/cidrallocator.go` `MetaAllocator.DryRun`), so its
/// refusal names one range. `minor` is `/version`'s (`"33"`, or `"33+"` on some providers).
pub fn may_hold_several_ranges(minor: &str) -> bool {
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u32>().is_ok_and(|m| m >= 33)
}

/// The first minor release whose dry-run Service create range-checks the ClusterIP: up to 1.22
/// the REST `Create` allocated only `if !dryrun.IsDryRun(options.DryRun)` (k/k PR #67038, 1.12;
/// the 1.20-era `pkg/registry/core/service/storage/rest.go` quoted in k8s-versions.md §11, and
/// 1.22's transitional `beginCreate` the same), and the allocator rework that checks under dry
/// run (`allocIPs` with `allocator.DryRun()`, k/k PR #104378, merged after 1.22's release) came
/// with 1.23 — the boundary kube-sim models (`KubeVersion::dry_run_checks_cluster_ip`). Only a
/// server known to be older skips the dry run; were the boundary off, the real create that follows
/// is refused with the same range.
pub const DRY_RUN_RANGE_CHECKED_FROM: u32 = 23;

fn refusal_probe(message: &str, dry_run: bool, ip: &str) -> Probe {
    match parse_refusal(message) {
        Refusal::Range(cidrs) => Probe::Range {
            cidrs,
            dry_run,
            maybe_partial: false,
        },
        Refusal::Mismatched => Probe::Unknown(format!(
            "the API server refused clusterIP {ip} without naming its range (\"the provided network does not match the current range\": Kubernetes 1.33+ with MultiCIDRServiceAllocator, whose ranges only the ServiceCIDR API shows)"
        )),
        Refusal::NoRange => Probe::Unknown(format!(
            "the API server refused clusterIP {ip} without naming its range: {message}"
        )),
    }
}

/// Whether the API server *answered* (4xx: RBAC, a missing namespace, an admission webhook):
/// then the probe gives up and the range is guessed. Anything else (unreachable, timeouts, 5xx
/// after retries) fails the bundle, as every other read does.
fn answered(e: &crate::kube::Error) -> bool {
    e.code().is_some_and(|c| (400..500).contains(&c))
}

/// Ask the API server for its Service range: create a ClusterIP Service it must refuse (see
/// [`probe_ip`]) in `namespace` and read the range from the 422. Dry-run first (range-checked
/// from ~1.23); when the dry-run passes unchecked, a real create. A real create that succeeds
/// anyway is deleted at once, and `notes` says so.
pub async fn probe(
    conn: &Connection,
    namespace: &str,
    kubernetes_ip: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Probe, crate::kube::Error> {
    let ip = probe_ip(kubernetes_ip);
    let suffix: String = (0..5)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)]))
        .collect();
    let name = format!("meshvm-cidr-probe-{suffix}");
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "ports": [{"name": "probe", "port": 443, "protocol": "TCP"}],
        },
    }))
    .expect("the probe Service is a valid Service");
    let api: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
    let action = || Request::new("create", "services").ns(namespace).name(&name);
    let params = |dry_run| PostParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let dry = params(true);
    // A release known to skip the range check under dry run answers the dry run with nothing to
    // learn: ask for real at once.
    let unchecked = crate::read::known_server_version(conn)
        .is_some_and(|v| !v.at_least(DRY_RUN_RANGE_CHECKED_FROM));
    if !unchecked {
        match conn.call(action(), || api.create(&dry, &service)).await {
            Err(e) if e.is_invalid() => {
                let mut found = refusal_probe(e.status_message().unwrap_or_default(), true, ip);
                if let Probe::Range { maybe_partial, .. } = &mut found {
                    // Only the version tells the MultiCIDR era's answer from the alloc.go era's
                    // (read once per connection: [`crate::read::server_version`]).
                    *maybe_partial = match crate::read::server_version(conn).await {
                        Ok(v) => may_hold_several_ranges(&v.minor.to_string()),
                        Err(e) if answered(&e) => false,
                        Err(e) => return Err(e),
                    };
                }
                return Ok(found);
            }
            // Accepted without a range check (before the alloc.go era): ask for real.
            Ok(_) => {}
            // Dry-run switched off (an alpha gate before 1.13): ask for real too.
            Err(e)
                if e.code() == Some(400) && e.to_string().to_ascii_lowercase().contains("dry") => {}
            Err(e) if answered(&e) => {
                return Ok(Probe::Unknown(format!(
                    "could not ask the API server (a dry-run Service create in namespace {namespace} failed: {e})"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    let real = params(false);
    let created = match conn.call(action(), || api.create(&real, &service)).await {
        Err(e) if e.is_invalid() => {
            return Ok(refusal_probe(
                e.status_message().unwrap_or_default(),
                false,
                ip,
            ));
        }
        Ok(_) => true,
        // A retried create whose first attempt landed: ours, by its random name.
        Err(e) if e.is_already_exists() => true,
        Err(e) if answered(&e) => {
            return Ok(Probe::Unknown(format!(
                "could not ask the API server (a Service create in namespace {namespace} failed: {e})"
            )));
        }
        Err(e) => return Err(e),
    };
    debug_assert!(created);
    let delete = ::kube::api::DeleteParams::background();
    let deleted = conn
        .call(
            Request::new("delete", "services").ns(namespace).name(&name),
            || api.delete(&name, &delete),
        )
        .await;
    notes.push(match deleted {
        Ok(_) => format!(
            "the API server accepted Service {namespace}/{name} with clusterIP {ip}, which should be impossible; it was deleted at once"
        ),
        Err(e) if e.is_not_found() => format!(
            "the API server accepted Service {namespace}/{name} with clusterIP {ip}, which should be impossible; it is already gone"
        ),
        Err(e) => format!(
            "the API server accepted Service {namespace}/{name} with clusterIP {ip}, which should be impossible, and deleting it failed ({e}): delete it with `kubectl -n {namespace} delete service {name}`"
        ),
    });
    Ok(Probe::Unknown(format!(
        "the API server accepted clusterIP {ip} instead of refusing it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal texts per era, exactly as k8s-versions.md §11 quotes them (name `x`, IP
    /// `1.1.1.1`, range `10.96.0.0/12`), and as meshvm's probe gets them (IP 0.0.0.0).
    #[test]
    fn refusals_per_era() {
        let cases = [
            // ≤1.8 (k/k allocator.go @ 03e06024 `ErrNotInRange`; kubernetes#37829): no range.
            (
                r#"Service "x" is invalid: spec.clusterIP: Invalid value: "1.1.1.1": provided IP is not in the valid range"#,
                Refusal::NoRange,
            ),
            // ~1.9–1.19 (k/k PR #52693).
            (
                r#"Service "x" is invalid: spec.clusterIP: Invalid value: "1.1.1.1": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"#,
                Refusal::Range(vec!["10.96.0.0/12".into()]),
            ),
            // 1.20-era dual-stack REST (k/k `pkg/registry/core/service/storage/rest.go` allocIPs).
            (
                r#"Service "x" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocated ip:1.1.1.1 with error:provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"#,
                Refusal::Range(vec!["10.96.0.0/12".into()]),
            ),
            // alloc.go era (~1.23) to 1.32, and 1.33+ with MultiCIDRServiceAllocator off.
            (
                r#"Service "x" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#,
                Refusal::Range(vec!["10.96.0.0/12".into()]),
            ),
            // MultiCIDRServiceAllocator on (default from 1.33): no range.
            (
                r#"Service "x" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided network does not match the current range"#,
                Refusal::Mismatched,
            ),
            // What the probe itself gets on a kubeadm cluster (alloc.go era).
            (
                r#"Service "meshvm-cidr-probe-bcdfg" is invalid: spec.clusterIPs: Invalid value: []string{"0.0.0.0"}: failed to allocate IP 0.0.0.0: the provided IP (0.0.0.0) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#,
                Refusal::Range(vec!["10.96.0.0/12".into()]),
            ),
            // GKE-style /20, IPv6, and a sentence-final period.
            (
                "failed to allocate IP ::: the provided IP (::) is not in the valid range. The range of valid IPs is fd00:10:96::/108.",
                Refusal::Range(vec!["fd00:10:96::/108".into()]),
            ),
            // Two families (apimachinery joins several causes as `[a, b]`).
            (
                r#"Service "x" is invalid: [spec.clusterIPs[0]: Invalid value: ... The range of valid IPs is 34.118.224.0/20, spec.clusterIPs[1]: Invalid value: ... The range of valid IPs is fd00::/108]"#,
                Refusal::Range(vec!["34.118.224.0/20".into(), "fd00::/108".into()]),
            ),
            ("something else entirely", Refusal::NoRange),
            ("The range of valid IPs is banana", Refusal::NoRange),
        ];
        for (message, want) in cases {
            assert_eq!(parse_refusal(message), want, "{message}");
        }
    }

    use crate::read::tests::{Req, mock, status};
    use serde_json::{Value, json};

    const ALLOC_GO: &str = r#"Service "meshvm-cidr-probe-x" is invalid: spec.clusterIPs: Invalid value: []string{"0.0.0.0"}: failed to allocate IP 0.0.0.0: the provided IP (0.0.0.0) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#;
    const REST_GO_120: &str = r#"Service "meshvm-cidr-probe-x" is invalid: spec.clusterIPs: Invalid value: []string{"0.0.0.0"}: failed to allocated ip:0.0.0.0 with error:provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"#;
    const MULTI_CIDR: &str = r#"Service "meshvm-cidr-probe-x" is invalid: spec.clusterIPs: Invalid value: []string{"0.0.0.0"}: failed to allocate IP 0.0.0.0: the provided network does not match the current range"#;

    fn created(r: &Req) -> (u16, Value) {
        let mut echo = r.body.clone();
        echo["metadata"]["uid"] = json!("u");
        (201, echo)
    }

    async fn run_probe(
        route: impl Fn(&Req) -> (u16, Value) + Send + Sync + 'static,
    ) -> (Probe, Vec<String>, Vec<String>) {
        let (conn, log) = mock(route);
        let mut notes = Vec::new();
        let probe = probe(&conn, "expandvm", Some("10.96.0.1"), &mut notes)
            .await
            .expect("the API server answered");
        let log = log.lock().unwrap().clone();
        (probe, notes, log)
    }

    /// 1.23+: the dry-run create is range-checked, so nothing is ever created.
    #[tokio::test]
    async fn a_refused_dry_run_is_enough() {
        let (probe, notes, log) = run_probe(|r| {
            if r.path == "/version" {
                return (
                    200,
                    json!({"major": "1", "minor": "28", "gitVersion": "v1.28.0"}),
                );
            }
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/api/v1/namespaces/expandvm/services");
            assert_eq!(r.param("dryRun").as_deref(), Some("All"));
            assert_eq!(r.body["spec"]["clusterIP"], "0.0.0.0");
            assert_eq!(r.body["spec"]["type"], "ClusterIP");
            assert!(
                r.body["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("meshvm-cidr-probe-")
            );
            status(422, "Invalid", ALLOC_GO)
        })
        .await;
        assert_eq!(
            probe,
            Probe::Range {
                cidrs: vec!["10.96.0.0/12".into()],
                dry_run: true,
                maybe_partial: false,
            }
        );
        assert!(notes.is_empty());
        assert_eq!(log.len(), 2, "the refused dry run, then /version: {log:?}");
        assert_eq!(log[1], "GET /version?");
    }

    /// 1.33+: a dry run is checked by one ServiceCIDR's allocator; several may exist.
    #[tokio::test]
    async fn a_dry_run_range_from_1_33_may_be_one_of_several() {
        let (probe, _, _) = run_probe(|r| match r.path.as_str() {
            "/version" => (
                200,
                json!({"major": "1", "minor": "33+", "gitVersion": "v1.33.1-gke.1"}),
            ),
            _ => status(422, "Invalid", ALLOC_GO),
        })
        .await;
        assert!(
            matches!(
                probe,
                Probe::Range {
                    maybe_partial: true,
                    dry_run: true,
                    ..
                }
            ),
            "{probe:?}"
        );
        assert!(may_hold_several_ranges("33") && may_hold_several_ranges("34+"));
        assert!(!may_hold_several_ranges("32") && !may_hold_several_ranges(""));
    }

    /// 1.20–1.22: the dry run skips allocation and succeeds; the real create is refused.
    #[tokio::test]
    async fn an_unchecked_dry_run_is_followed_by_a_real_create() {
        let (probe, notes, log) = run_probe(|r| match r.param("dryRun") {
            Some(_) => created(r),
            None => status(422, "Invalid", REST_GO_120),
        })
        .await;
        assert_eq!(
            probe,
            Probe::Range {
                cidrs: vec!["10.96.0.0/12".into()],
                dry_run: false,
                maybe_partial: false,
            }
        );
        assert!(notes.is_empty());
        assert_eq!(log.len(), 2, "{log:?}");
    }

    /// Should a real create ever succeed, the Service is deleted at once and the operator told.
    #[tokio::test]
    async fn an_accepted_probe_is_deleted_at_once() {
        let (probe, notes, log) = run_probe(|r| match r.method.as_str() {
            "POST" => created(r),
            "DELETE" => (200, json!({"kind": "Status", "status": "Success"})),
            other => panic!("unexpected {other}"),
        })
        .await;
        assert!(
            matches!(&probe, Probe::Unknown(why) if why.contains("accepted clusterIP 0.0.0.0")),
            "{probe:?}"
        );
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(
            log[2].starts_with("DELETE /api/v1/namespaces/expandvm/services/meshvm-cidr-probe-"),
            "{log:?}"
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("it was deleted at once"), "{notes:?}");
    }

    #[tokio::test]
    async fn no_range_from_1_33_nor_without_rbac() {
        let (probe, _, _) = run_probe(|_| status(422, "Invalid", MULTI_CIDR)).await;
        assert!(
            matches!(&probe, Probe::Unknown(why) if why.contains("MultiCIDRServiceAllocator")),
            "{probe:?}"
        );
        let (probe, _, log) = run_probe(|_| {
            status(
                403,
                "Forbidden",
                "services is forbidden: User \"dev\" cannot create resource \"services\"",
            )
        })
        .await;
        assert!(
            matches!(&probe, Probe::Unknown(why) if why.contains("could not ask the API server") && why.contains("forbidden")),
            "{probe:?}"
        );
        assert_eq!(
            log.len(),
            1,
            "a refused dry run is not followed by a real create"
        );
    }

    /// The API server failing (not answering) fails the bundle, as every other read does.
    #[tokio::test]
    async fn server_failures_are_errors_not_guesses() {
        let (conn, _) = mock(|_| status(503, "ServiceUnavailable", "etcdserver: leader changed"));
        let err = probe(&conn, "expandvm", None, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(503), "{err}");
    }

    #[test]
    fn the_probe_ip_is_unallocatable_in_the_services_family() {
        assert_eq!(probe_ip(Some("10.96.0.1")), "0.0.0.0");
        assert_eq!(probe_ip(Some("fd00:10:96::1")), "::");
        assert_eq!(probe_ip(None), "0.0.0.0");
        assert_eq!(probe_ip(Some("None")), "0.0.0.0");
    }
}
