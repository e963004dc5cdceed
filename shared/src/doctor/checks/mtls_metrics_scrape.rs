//! `mtls.metrics-scrape`: Prometheus scraping injected workloads' application ports.
//!
//! Prometheus scrapes pod IPs directly. A scrape of an injected pod's captured (application)
//! port lands on the sidecar; without Istio certificates it is plaintext and STRICT refuses it.
//!
//! - 1.4: the Prometheus addon runs without a sidecar (`sidecar.istio.io/inject: "false"`,
//!   istio/istio@1.4.2 install/kubernetes/helm/istio/charts/prometheus/templates/deployment.yaml:25)
//!   and mounts the `istio.default` certificates (`:58-70`). Its config
//!   (`…/charts/prometheus/templates/configmap.yaml`) has a `kubernetes-pods` job that keeps
//!   only pods without `sidecar.istio.io/status` or with `prometheus.io/scheme: http`
//!   (`:209-222`), and a `kubernetes-pods-istio-secure` job that scrapes the injected ones over
//!   https with the Istio certificates (`:241-261`). Doctor reads the jobs from the `prometheus`
//!   ConfigMap and evaluates their keep/drop relabel rules for each workload, as Prometheus does
//!   (anchored RE2 regexes over `;`-joined source labels).
//! - Modern: the injector merges metrics by default: it rewrites `prometheus.io/port|path` to the
//!   agent's status port 15020 (never captured) unless `prometheus.istio.io/merge-metrics: "false"`
//!   or meshConfig `enablePrometheusMerge: false` (istio/istio@1.8.0 pkg/kube/inject/webhook.go:567-584,
//!   @1.22.0 pkg/kube/inject/webhook.go:315-331,810-845, default on in pkg/config/mesh/mesh.go:107).

use std::collections::BTreeMap;

use serde_json::Value;

use super::mtls_probes::parse_bool;
use super::workloads::{Sidecar, Workload};
use super::{list, or_pass};
use crate::doctor::mesh::PeerMode;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::snapshot::{Kind, Obj, Snapshot};

/// Warns for each injected workload a Prometheus without sidecar or Istio certificates scrapes
/// on a captured port.
pub struct MtlsMetricsScrape;

const ID: &str = "mtls.metrics-scrape";

/// One pod-scraping job.
struct Job {
    name: String,
    /// `scheme: https` with a client certificate (`tls_config.cert_file`).
    istio_certs: bool,
    rules: Vec<Relabel>,
}

/// One keep/drop relabel rule (other actions do not decide which pods are scraped).
struct Relabel {
    sources: Vec<String>,
    separator: String,
    keep: bool,
    /// `None`: a regex doctor cannot evaluate (the rule is assumed to keep).
    regex: Option<Regex>,
}

/// The pod-role jobs of a Prometheus config.
fn pod_jobs(config: &Value) -> Vec<Job> {
    config
        .get("scrape_configs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|job| {
            job.get("kubernetes_sd_configs")
                .and_then(Value::as_array)
                .is_some_and(|sds| {
                    sds.iter()
                        .any(|sd| sd.get("role").and_then(Value::as_str) == Some("pod"))
                })
        })
        .map(|job| {
            let https = job.get("scheme").and_then(Value::as_str) == Some("https");
            let cert = job.pointer("/tls_config/cert_file").is_some();
            let rules = job
                .get("relabel_configs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let action = r.get("action").and_then(Value::as_str).unwrap_or("replace");
                    let keep = match action {
                        "keep" => true,
                        "drop" => false,
                        _ => return None,
                    };
                    let regex_text = r.get("regex").map_or_else(
                        || "(.*)".to_string(),
                        |v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        },
                    );
                    Some(Relabel {
                        sources: r
                            .get("source_labels")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect(),
                        separator: r
                            .get("separator")
                            .and_then(Value::as_str)
                            .unwrap_or(";")
                            .to_string(),
                        keep,
                        regex: Regex::parse(&regex_text),
                    })
                })
                .collect();
            Job {
                name: job
                    .get("job_name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                istio_certs: https && cert,
                rules,
            }
        })
        .collect()
}

/// Prometheus' pod discovery labels for a workload (`__meta_kubernetes_pod_annotation_*`, …),
/// names sanitized as Prometheus does (anything but `[a-zA-Z0-9_]` becomes `_`).
fn meta_labels(w: &Workload<'_>) -> BTreeMap<String, String> {
    let clean = |k: &str| -> String {
        k.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut out = BTreeMap::new();
    for (k, v) in w.labels() {
        out.insert(
            format!("__meta_kubernetes_pod_label_{}", clean(k)),
            v.to_string(),
        );
    }
    for (k, v) in w.annotations() {
        out.insert(
            format!("__meta_kubernetes_pod_annotation_{}", clean(k)),
            v.to_string(),
        );
    }
    out.insert("__meta_kubernetes_namespace".into(), w.ns.clone());
    // One target per declared container port (host:port), else the bare pod IP.
    let first_port = w
        .containers()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.container_port)
        .next();
    out.insert(
        "__address__".into(),
        first_port.map_or_else(|| "10.0.0.1".to_string(), |p| format!("10.0.0.1:{p}")),
    );
    out
}

/// Whether a job keeps the target (every keep/drop rule, in order).
fn scrapes(job: &Job, labels: &BTreeMap<String, String>) -> bool {
    job.rules.iter().all(|r| {
        let joined = r
            .sources
            .iter()
            .map(|s| labels.get(s).map_or("", String::as_str))
            .collect::<Vec<_>>()
            .join(&r.separator);
        match &r.regex {
            None => true,
            Some(re) => re.full_match(&joined) == r.keep,
        }
    })
}

/// The Prometheus servers among the workloads: an app container running the `prometheus` image.
fn is_prometheus(w: &Workload<'_>) -> bool {
    w.app_containers().any(|c| {
        let image = c.image.as_deref().unwrap_or_default();
        let repo = image.split('@').next().unwrap_or_default();
        let repo = match repo.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repo,
        };
        repo.rsplit('/').next() == Some("prometheus")
    })
}

/// The `prometheus` ConfigMap's config (`prometheus.yml`, or any key holding `scrape_configs`).
fn prometheus_config(cm: &Obj) -> Option<Value> {
    let keys: Vec<&str> = cm.data_keys().into_iter().collect();
    let ordered = std::iter::once("prometheus.yml").chain(keys);
    ordered.into_iter().find_map(|k| {
        let text = String::from_utf8(cm.data(k)?).ok()?;
        let v: Value = serde_saphyr::from_str(&text).ok()?;
        v.get("scrape_configs").is_some().then_some(v)
    })
}

impl Check for MtlsMetricsScrape {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "a Prometheus with neither a sidecar nor Istio certificates scrapes an injected workload's application port (refused under STRICT); modern metrics merging avoids it"
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if let Some(skip) = super::need_workloads(ID, ctx) {
            return skip;
        }
        let release = ctx.mesh.release;
        let mesh_merge = snap.mesh_config().and_then(|m| m.enable_prometheus_merge);
        let cm = snap
            .of(Kind::ConfigMap)
            .iter()
            .find(|c| c.name() == "prometheus");
        let jobs = cm.and_then(prometheus_config).map(|c| pod_jobs(&c));
        let servers: Vec<&Workload<'_>> =
            ctx.workloads.iter().filter(|w| is_prometheus(w)).collect();
        if cm.is_none() && servers.is_empty() {
            return vec![Finding::pass(
                ID,
                "no Prometheus found (no prometheus image among the workloads, no prometheus ConfigMap)",
            )];
        }
        // The server: the one in the ConfigMap's namespace, else the first.
        let server = cm
            .and_then(|cm| servers.iter().find(|w| w.ns == cm.namespace()))
            .or_else(|| servers.first());
        let server_name = server.map_or_else(
            || {
                format!(
                    "the Prometheus configured by {}",
                    cm.map(Obj::reference).unwrap_or_default()
                )
            },
            |w| w.reference.clone(),
        );
        if let Some(s) = server
            && s.sidecar(snap, ctx.era) == Sidecar::Yes
        {
            return vec![Finding::pass(
                ID,
                format!("{server_name} runs a sidecar: its scrapes leave through Envoy"),
            )];
        }
        let mut out = Vec::new();
        let mut merged = 0;
        for w in &ctx.workloads {
            if w.annotation("prometheus.io/scrape") != Some("true")
                || w.sidecar(snap, ctx.era) != Sidecar::Yes
                || is_prometheus(w)
            {
                continue;
            }
            let pod_merge = w
                .annotation("prometheus.istio.io/merge-metrics")
                .and_then(parse_bool);
            if !release.legacy() && !w.injected() && pod_merge.or(mesh_merge).unwrap_or(true) {
                merged += 1;
                continue;
            }
            let labels = meta_labels(w);
            let port = w
                .annotation("prometheus.io/port")
                .and_then(|p| p.parse::<u32>().ok())
                .or_else(|| {
                    labels
                        .get("__address__")
                        .and_then(|a| a.rsplit_once(':'))
                        .and_then(|(_, p)| p.parse().ok())
                });
            let Some(port) = port else { continue };
            if w.uncaptured_ports(ctx.era).contains(&port) {
                continue;
            }
            let (via, how) = match &jobs {
                Some(jobs) => {
                    let kept: Vec<&Job> = jobs.iter().filter(|j| scrapes(j, &labels)).collect();
                    if kept.is_empty() || kept.iter().all(|j| j.istio_certs) {
                        continue;
                    }
                    let plain: Vec<&str> = kept
                        .iter()
                        .filter(|j| !j.istio_certs)
                        .map(|j| j.name.as_str())
                        .collect();
                    (
                        format!("job(s) {} scrape it in plaintext", plain.join(", ")),
                        "drop prometheus.io/scheme: http so the kubernetes-pods-istio-secure job (Istio certificates) scrapes it, or give the scraping job Istio certificates (scheme: https, tls_config with /etc/istio-certs), as the 1.4 Prometheus addon does",
                    )
                }
                None => (
                    "its scrape config is not in a prometheus ConfigMap, so it is assumed to scrape without Istio certificates".to_string(),
                    "give Prometheus Istio certificates and an https job for injected pods (the 1.4 addon's kubernetes-pods-istio-secure job), or scrape the agent's port",
                ),
            };
            let strict_now = ctx.mesh.ns_mode(&w.ns).mode == PeerMode::Strict;
            let (breaks, when) = if strict_now {
                (Breaks::Now, "refused now: its namespace is already STRICT")
            } else {
                (Breaks::WhenStrict, "refused once STRICT is turned on")
            };
            let merge_note = if release.legacy() {
                ""
            } else {
                " (metrics merging is off for it)"
            };
            out.push(
                Finding::warn(
                    ID,
                    format!(
                        "{server_name} has no sidecar and scrapes application port {port}{merge_note}: {via}; {when}"
                    ),
                )
                .on(w.obj)
                .object(w.reference.clone())
                .ns(&w.ns)
                .breaks(breaks)
                .hint(if release.legacy() {
                    how.to_string()
                } else {
                    "turn metrics merging back on (drop prometheus.istio.io/merge-metrics: \"false\" and meshConfig.enablePrometheusMerge: false) so Prometheus scrapes the agent's port 15020".to_string()
                }),
            );
        }
        let shown: Vec<String> = jobs.iter().flatten().map(|j| j.name.clone()).collect();
        or_pass(
            ID,
            out,
            if merged > 0 {
                format!(
                    "{merged} scraped workload(s) have their metrics merged to the agent's port 15020, which STRICT does not guard"
                )
            } else if shown.is_empty() {
                format!("{server_name} scrapes no injected workload's application port")
            } else {
                format!(
                    "{server_name} scrapes no injected workload's application port in plaintext (pod jobs: {})",
                    list(&shown, 4)
                )
            },
        )
    }
}

/// A small RE2-compatible matcher for relabel regexes: literals, escapes (`\d \w \s`, escaped
/// punctuation), `.`, classes, groups (`(…)`, `(?:…)`), `|`, `*`, `+`, `?`. Anything else (bounded
/// repeats, anchors, flags) is not parsed, and the rule is then assumed to keep.
#[derive(Debug)]
struct Regex(Vec<Vec<Node>>);

#[derive(Debug)]
enum Node {
    Char(char),
    Any,
    Class(bool, Vec<(char, char)>),
    Group(Vec<Vec<Node>>),
    Repeat(Box<Node>, usize, bool),
}

impl Regex {
    fn parse(text: &str) -> Option<Regex> {
        let chars: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let alts = parse_alts(&chars, &mut pos)?;
        (pos == chars.len()).then_some(Regex(alts))
    }

    /// Anchored at both ends, as Prometheus anchors relabel regexes.
    fn full_match(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        self.0
            .iter()
            .any(|alt| match_seq(alt, &chars, 0, &|p| p == chars.len()))
    }
}

fn class_escape(c: char) -> Option<(bool, Vec<(char, char)>)> {
    match c {
        'd' => Some((false, vec![('0', '9')])),
        'D' => Some((true, vec![('0', '9')])),
        'w' => Some((false, vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')])),
        'W' => Some((true, vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')])),
        's' => Some((
            false,
            vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')],
        )),
        'S' => Some((
            true,
            vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')],
        )),
        _ => None,
    }
}

fn parse_alts(c: &[char], pos: &mut usize) -> Option<Vec<Vec<Node>>> {
    let mut alts = vec![Vec::new()];
    while *pos < c.len() {
        let atom = match c[*pos] {
            ')' => break,
            '|' => {
                *pos += 1;
                alts.push(Vec::new());
                continue;
            }
            '(' => {
                *pos += 1;
                if c.get(*pos) == Some(&'?') {
                    if c.get(*pos + 1) != Some(&':') {
                        return None;
                    }
                    *pos += 2;
                }
                let inner = parse_alts(c, pos)?;
                if c.get(*pos) != Some(&')') {
                    return None;
                }
                *pos += 1;
                Node::Group(inner)
            }
            '[' => {
                *pos += 1;
                let neg = c.get(*pos) == Some(&'^');
                if neg {
                    *pos += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let ch = *c.get(*pos)?;
                    if ch == ']' && !first {
                        *pos += 1;
                        break;
                    }
                    first = false;
                    let lo = if ch == '\\' {
                        let e = *c.get(*pos + 1)?;
                        *pos += 2;
                        if let Some((false, rs)) = class_escape(e) {
                            ranges.extend(rs);
                            continue;
                        }
                        if e.is_ascii_alphanumeric() {
                            return None;
                        }
                        e
                    } else {
                        *pos += 1;
                        ch
                    };
                    if c.get(*pos) == Some(&'-') && c.get(*pos + 1).is_some_and(|n| *n != ']') {
                        let hi = c[*pos + 1];
                        *pos += 2;
                        ranges.push((lo, hi));
                    } else {
                        ranges.push((lo, lo));
                    }
                }
                Node::Class(neg, ranges)
            }
            '\\' => {
                let e = *c.get(*pos + 1)?;
                *pos += 2;
                match class_escape(e) {
                    Some((neg, rs)) => Node::Class(neg, rs),
                    None if e.is_ascii_alphanumeric() => return None,
                    None => Node::Char(e),
                }
            }
            '.' => {
                *pos += 1;
                Node::Any
            }
            '*' | '+' | '?' | '{' | '^' | '$' => return None,
            ch => {
                *pos += 1;
                Node::Char(ch)
            }
        };
        let atom = match c.get(*pos) {
            Some('*') => Node::Repeat(Box::new(atom), 0, false),
            Some('+') => Node::Repeat(Box::new(atom), 1, false),
            Some('?') => Node::Repeat(Box::new(atom), 0, true),
            _ => {
                alts.last_mut()?.push(atom);
                continue;
            }
        };
        *pos += 1;
        if matches!(c.get(*pos), Some('?' | '*' | '+' | '{')) {
            return None; // lazy or nested quantifiers
        }
        alts.last_mut()?.push(atom);
    }
    Some(alts)
}

fn match_seq(seq: &[Node], s: &[char], pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
    let Some((first, rest)) = seq.split_first() else {
        return k(pos);
    };
    let next = |p: usize| match_seq(rest, s, p, k);
    match first {
        Node::Char(ch) => s.get(pos) == Some(ch) && next(pos + 1),
        Node::Any => s.get(pos).is_some_and(|c| *c != '\n') && next(pos + 1),
        Node::Class(neg, ranges) => {
            s.get(pos)
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *neg)
                && next(pos + 1)
        }
        Node::Group(alts) => alts.iter().any(|alt| match_seq(alt, s, pos, &next)),
        Node::Repeat(node, min, at_most_one) => repeat(node, *min, *at_most_one, 0, s, pos, &next),
    }
}

fn repeat(
    node: &Node,
    min: usize,
    at_most_one: bool,
    count: usize,
    s: &[char],
    pos: usize,
    k: &dyn Fn(usize) -> bool,
) -> bool {
    // Greedy: one more (making progress), then stop when enough.
    if (!at_most_one || count == 0)
        && match_seq(std::slice::from_ref(node), s, pos, &|p| {
            p > pos && repeat(node, min, at_most_one, count + 1, s, p, k)
        })
    {
        return true;
    }
    count >= min && k(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    /// The two pod jobs of the 1.4 addon config (istio/istio@1.4.2
    /// install/kubernetes/helm/istio/charts/prometheus/templates/configmap.yaml:209-261), as data.
    const ADDON: &str = r"
apiVersion: v1
kind: ConfigMap
metadata: {name: prometheus, namespace: istio-system}
data:
  prometheus.yml: |-
    global: {scrape_interval: 15s}
    scrape_configs:
    - job_name: 'kubernetes-pods'
      kubernetes_sd_configs: [{role: pod}]
      relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: true
      - source_labels: [__meta_kubernetes_pod_annotation_sidecar_istio_io_status, __meta_kubernetes_pod_annotation_prometheus_io_scheme]
        action: keep
        regex: ((;.*)|(.*;http))
      - source_labels: [__meta_kubernetes_pod_annotation_istio_mtls]
        action: drop
        regex: (true)
    - job_name: 'kubernetes-pods-istio-secure'
      scheme: https
      tls_config:
        ca_file: /etc/istio-certs/root-cert.pem
        cert_file: /etc/istio-certs/cert-chain.pem
        key_file: /etc/istio-certs/key.pem
        insecure_skip_verify: true
      kubernetes_sd_configs: [{role: pod}]
      relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: true
      - source_labels: [__meta_kubernetes_pod_annotation_sidecar_istio_io_status, __meta_kubernetes_pod_annotation_istio_mtls]
        action: keep
        regex: (([^;]+);([^;]*))|(([^;]*);(true))
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme]
        action: drop
        regex: (http)
      - source_labels: [__address__]
        action: keep
        regex: ([^:]+):(\d+)
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus, namespace: istio-system}
spec:
  template:
    metadata: {annotations: {sidecar.istio.io/inject: 'false'}}
    spec: {containers: [{name: prometheus, image: docker.io/prom/prometheus:v2.12.0}]}
";

    /// A plain pod job with no sidecar filter.
    const PLAIN: &str = r"
apiVersion: v1
kind: ConfigMap
metadata: {name: prometheus, namespace: monitoring}
data:
  prometheus.yml: |-
    scrape_configs:
    - job_name: pods
      kubernetes_sd_configs: [{role: pod}]
      relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: 'true'}
";

    /// A live injected pod as 1.4 runs it: status annotation, app port 9080.
    fn pod(extra: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: reviews-1, namespace: bookinfo, annotations: {{sidecar.istio.io/status: x, prometheus.io/scrape: 'true', prometheus.io/port: '9080'{extra}}}}}\nspec: {{containers: [{{name: app, ports: [{{containerPort: 9080}}]}}, {{name: istio-proxy}}]}}\n"
        )
    }

    fn template(ns: &str, extra: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: cart, namespace: {ns}}}\nspec:\n  template:\n    metadata: {{annotations: {{prometheus.io/scrape: 'true', prometheus.io/port: '8080'{extra}}}}}\n    spec: {{containers: [{{name: app, ports: [{{containerPort: 8080}}]}}]}}\n"
        )
    }

    fn modern_app() -> Fixture {
        Fixture::modern().with(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n",
        )
    }

    #[test]
    fn table() {
        let cases = [
            ("legacy: addon, secure job scrapes it", Fixture::legacy().with(ADDON).with(&pod("")), Pass),
            ("legacy: addon, scheme http forces the plain job", Fixture::legacy().with(ADDON).with(&pod(", prometheus.io/scheme: http")), Warn),
            ("legacy: plain job", Fixture::legacy().with(PLAIN).with(&pod("")), Warn),
            ("legacy: plain job, status port", Fixture::legacy().with(PLAIN).with(&pod("").replace("'9080'", "'15020'")), Pass),
            (
                "legacy: prometheus with a sidecar",
                Fixture::legacy().with(PLAIN).with(&pod("")).with("apiVersion: v1\nkind: Namespace\nmetadata: {name: monitoring, labels: {istio-injection: enabled}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: prometheus, namespace: monitoring}\nspec: {template: {spec: {containers: [{name: p, image: quay.io/prometheus/prometheus:v2.40.0}]}}}\n"),
                Pass,
            ),
            ("legacy: no prometheus", Fixture::legacy().with(&pod("")), Pass),
            ("modern: metrics merged by default", modern_app().with(PLAIN).with(&template("shop", "")), Pass),
            ("modern: merging off on the pod", modern_app().with(PLAIN).with(&template("shop", ", prometheus.istio.io/merge-metrics: 'false'")), Warn),
            (
                "modern: merging off in the mesh config",
                modern_app()
                    .with(PLAIN)
                    .with(&template("shop", ""))
                    .with("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: 'enablePrometheusMerge: false'\n"),
                Warn,
            ),
            ("no workloads", Fixture::legacy().with(PLAIN), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&MtlsMetricsScrape), severity, case);
        }
    }

    #[test]
    fn names_the_workload_and_job() {
        let out = Fixture::legacy()
            .with(ADDON)
            .with(&pod(", prometheus.io/scheme: http"))
            .run(&MtlsMetricsScrape);
        let f = &out[0];
        assert_eq!(f.object, "Pod bookinfo/reviews-1");
        assert_eq!(f.namespaces, ["bookinfo"]);
        assert_eq!(f.breaks, Some(Breaks::WhenStrict));
        assert!(
            f.message.contains("Deployment istio-system/prometheus")
                && f.message
                    .contains("job(s) kubernetes-pods scrape it in plaintext")
                && f.message.contains("port 9080"),
            "{}",
            f.message
        );
    }

    #[test]
    fn relabel_regexes_match_like_prometheus() {
        let re = |r: &str| Regex::parse(r).unwrap();
        assert!(re("((;.*)|(.*;http))").full_match(";"));
        assert!(re("((;.*)|(.*;http))").full_match("x;http"));
        assert!(!re("((;.*)|(.*;http))").full_match("x;"));
        assert!(re("(([^;]+);([^;]*))|(([^;]*);(true))").full_match("st;"));
        assert!(!re("(([^;]+);([^;]*))|(([^;]*);(true))").full_match(";"));
        assert!(re(r"([^:]+):(\d+)").full_match("10.0.0.1:80"));
        assert!(!re(r"([^:]+):(\d+)").full_match("10.0.0.1"));
        assert!(re("true").full_match("true") && !re("true").full_match("truex"));
        assert!(re("a?b+c*").full_match("bb") && !re("a?b+c*").full_match("aa"));
        assert!(Regex::parse("a{2}").is_none() && Regex::parse("^a").is_none());
    }
}
