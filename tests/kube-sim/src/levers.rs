//! Test levers: latency, fault injection, RBAC-like denials, users and impersonation, the
//! request log (in memory and as JSON lines in a file), and the API-semantics levers (expiring continue tokens, Terminating namespaces).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What an injected fault does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// HTTP 500 `InternalError` Status.
    InternalError,
    /// HTTP 429 `TooManyRequests` Status with `Retry-After`.
    TooManyRequests {
        /// Seconds in the `Retry-After` header.
        retry_after_seconds: u32,
    },
    /// The connection is dropped without a response (HTTP/2: the stream is reset).
    ConnectionReset,
    /// HTTP 409 `Conflict` Status with the apiserver's stale-resourceVersion message, as when
    /// another writer changed the object between the client's read and its write (a writer
    /// that always wins, without the timing of a real one).
    Conflict,
}

/// One fault rule: applies to requests matching `verb` and `path` with probability `rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// Probability in 0..=1 (1: every matching request).
    pub rate: f64,
    /// Kubernetes verb (`get`, `list`, `create`, `patch`, …) or HTTP method (`GET`); None: any.
    pub verb: Option<String>,
    /// Path prefix (`/api/v1/namespaces/default/secrets`); None: any path.
    pub path: Option<String>,
    /// Stop after this many injections; None: unlimited.
    pub times: Option<u32>,
}

impl Fault {
    /// A fault on every request at `rate`.
    pub fn rate(kind: FaultKind, rate: f64) -> Self {
        Fault {
            kind,
            rate,
            verb: None,
            path: None,
            times: None,
        }
    }

    /// A fault on every request with this verb under this path prefix.
    pub fn on(kind: FaultKind, verb: &str, path: &str) -> Self {
        Fault {
            kind,
            rate: 1.0,
            verb: Some(verb.to_string()),
            path: Some(path.to_string()),
            times: None,
        }
    }

    /// Limits the fault to its first `n` injections.
    #[must_use]
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, verb: &str, path: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| {
            v == verb || v.eq_ignore_ascii_case(method) && v.chars().all(|c| c.is_ascii_uppercase())
        }) && self.path.as_deref().is_none_or(|p| path.starts_with(p))
            && self.times != Some(0)
    }
}

/// A denied (verb, resource, namespace) triple; `*` matches any verb or resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Kubernetes verb or `*`.
    pub verb: String,
    /// `secrets`, `serviceaccounts/token`, `destinationrules.networking.istio.io`, or `*`.
    pub resource: String,
    /// Only in this namespace; None: everywhere (cluster scope included).
    pub namespace: Option<String>,
}

impl Denial {
    /// Does this denial cover the request?
    pub fn matches(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> bool {
        let verb_ok = self.verb == "*" || self.verb == verb;
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let res_ok =
            self.resource == "*" || self.resource == resource || self.resource == qualified || {
                // `destinationrules.networking.istio.io/status` style for subresources.
                let (r, sub) = resource.split_once('/').unwrap_or((resource, ""));
                !sub.is_empty()
                    && !group.is_empty()
                    && self.resource == format!("{r}.{group}/{sub}")
            };
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|n| Some(n) == namespace);
        verb_ok && res_ok && ns_ok
    }
}

/// One request as the sim saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), or the lowercased method for non-resource paths.
    pub verb: String,
    /// URL path without the query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// HTTP status answered (0: connection reset).
    pub status: u16,
    /// The user the request acted as (after impersonation); "" when it did not authenticate.
    pub user: String,
    /// Size of the response body in bytes, before any compression (what the client decodes);
    /// None for watch streams (open-ended when logged) and connection resets.
    pub bytes: Option<u64>,
    /// Size of the body as sent: the gzipped size when `encoding` is `gzip`, else `bytes`.
    pub wire_bytes: Option<u64>,
    /// The response's `Content-Encoding`: `"gzip"`, or `""` when the body went as is (see
    /// [`crate::compression`] for when the apiserver compresses).
    pub encoding: String,
    /// The request's `Accept` header ("" when absent): tells a metadata-only list
    /// (`as=PartialObjectMetadataList`) or a Table from a full one.
    pub accept: String,
    /// The request's (first) `Accept-Encoding` header ("" when absent): whether the client
    /// asked for gzip.
    pub accept_encoding: String,
    /// When the request reached the sim (before any latency lever).
    pub arrived: std::time::Instant,
    /// When its answer was ready (after the latency lever and the handling).
    pub answered: std::time::Instant,
}

impl RequestRecord {
    /// The record as one line of the request log file: a JSON object with `verb`, `method`,
    /// `path`, `query`, `code`, `bytes`, `wire_bytes`, `encoding`, `user`, `accept` and
    /// `accept_encoding` (no trailing newline).
    pub fn json_line(&self) -> String {
        serde_json::json!({
            "verb": self.verb,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "code": self.status,
            "bytes": self.bytes,
            "wire_bytes": self.wire_bytes,
            "encoding": self.encoding,
            "user": self.user,
            "accept": self.accept,
            "accept_encoding": self.accept_encoding,
        })
        .to_string()
    }
}

/// The request log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLog {
    /// Every request, oldest first.
    pub records: Vec<RequestRecord>,
}

impl RequestLog {
    /// Requests with this Kubernetes verb or HTTP method (`"get"` or `"GET"`) and exact path.
    pub fn count(&self, verb: &str, path: &str) -> usize {
        self.records
            .iter()
            .filter(|r| (r.verb == verb || r.method == verb) && r.path == path)
            .count()
    }

    /// Counts per (verb, path).
    pub fn counts(&self) -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry((r.verb.clone(), r.path.clone())).or_insert(0) += 1;
        }
        m
    }

    /// All requests.
    pub fn total(&self) -> usize {
        self.records.len()
    }

    /// The round trips on the critical path: the longest chain of requests each of which
    /// arrived after the previous one was answered. Requests a client sends concurrently
    /// overlap and count once; what it sends only after an answer counts again. With a latency
    /// lever this is how many latencies a run waits, counted from the log rather than a clock.
    pub fn round_trips(&self) -> usize {
        let mut order: Vec<&RequestRecord> = self.records.iter().collect();
        order.sort_by_key(|r| r.arrived);
        let mut depth: Vec<usize> = Vec::with_capacity(order.len());
        for (i, r) in order.iter().enumerate() {
            let before = (0..i)
                .filter(|&j| order[j].answered <= r.arrived)
                .map(|j| depth[j])
                .max()
                .unwrap_or(0);
            depth.push(before + 1);
        }
        depth.into_iter().max().unwrap_or(0)
    }

    /// Requests that were not discovery, OpenAPI or `/version` (the round trips a verb's code makes).
    pub fn api_calls(&self) -> usize {
        self.records
            .iter()
            .filter(|r| !is_discovery_path(&r.path))
            .count()
    }
}

/// Is this path discovery, OpenAPI, version or health (what clients fetch besides real API calls)?
pub fn is_discovery_path(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api" | "apis" | "version"] | ["api" | "apis", _] | ["apis", _, _] | [] => true,
        [first, ..] => {
            *first == "openapi"
                || first.ends_with("healthz")
                || *first == "livez"
                || *first == "readyz"
        }
    }
}

/// When `continue` tokens stop being honoured (etcd compacts the revision a paged list started
/// at; the default compaction interval of kube-apiserver is 5 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContinueExpiry {
    /// Never (the default: a test sim never compacts).
    #[default]
    Never,
    /// Once this long has passed since the list's first page.
    After(Duration),
    /// After this many continued pages of one list: `AfterPages(0)` refuses every `continue`,
    /// `AfterPages(1)` serves the second page and refuses the third.
    AfterPages(u32),
}

/// The sim's extra users (beyond the kubeconfig's own `kube-sim`) and who may impersonate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// Extra users by name, with their bearer tokens.
    pub tokens: BTreeMap<String, String>,
    /// Extra users granted the `impersonate` verb whatever RBAC says (the admin `kube-sim`
    /// always has it, unless a denial covers `impersonate`).
    pub impersonators: BTreeSet<String>,
}

/// Lever settings a scenario carries beyond the request-path levers (see [`crate::Scenario`]'s
/// `with_*` builders defined in this module).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScenarioLevers {
    /// APIs turned on beyond the version's defaults.
    pub runtime: crate::version::RuntimeConfig,
    /// When continue tokens expire.
    pub continue_expiry: ContinueExpiry,
    /// How long a deleted namespace stays `Terminating` (zero: deleted at once).
    pub namespace_finalize_delay: Duration,
    /// Extra users (names; their tokens are made when the server starts) and impersonators.
    pub users: Vec<String>,
    /// Extra users who may impersonate.
    pub impersonators: Vec<String>,
    /// `--feature-gates=APIResponseCompression=false`: responses are never gzipped by the API
    /// response writer (`/openapi/v2`'s own gzip handler is not behind the gate).
    pub response_compression_off: bool,
}

impl crate::Scenario {
    /// Turns on APIs beyond the version's defaults, as `kube-apiserver --runtime-config` would
    /// (see [`crate::version::RuntimeConfig::parse`]).
    #[must_use]
    pub fn with_runtime_config(mut self, rc: crate::version::RuntimeConfig) -> Self {
        self.levers.runtime = rc;
        self
    }

    /// Makes `continue` tokens expire (410 `Expired`), as etcd compaction does.
    #[must_use]
    pub fn with_continue_expiry(mut self, expiry: ContinueExpiry) -> Self {
        self.levers.continue_expiry = expiry;
        self
    }

    /// Keeps a deleted namespace `Terminating` for `delay` before it and its contents go.
    #[must_use]
    pub fn with_namespace_finalize_delay(mut self, delay: Duration) -> Self {
        self.levers.namespace_finalize_delay = delay;
        self
    }

    /// Adds a user with its own bearer token (kubeconfig user and context named after it); the
    /// user is authorized by the RBAC objects stored in the sim (bound to nothing, it may only
    /// discover; see [`crate::rbac`]) and may impersonate only where RBAC grants it.
    #[must_use]
    pub fn with_user(mut self, name: &str) -> Self {
        if !self.levers.users.iter().any(|u| u == name) {
            self.levers.users.push(name.to_string());
        }
        self
    }

    /// `false` turns the `APIResponseCompression` feature gate off, as
    /// `--feature-gates=APIResponseCompression=false` would; `true` leaves it at the version's
    /// default (on from 1.16, off below). See [`crate::compression`].
    #[must_use]
    pub fn with_response_compression(mut self, enabled: bool) -> Self {
        self.levers.response_compression_off = !enabled;
        self
    }

    /// Adds a user (as [`Self::with_user`]) who may also impersonate.
    #[must_use]
    pub fn with_impersonator(mut self, name: &str) -> Self {
        self = self.with_user(name);
        if !self.levers.impersonators.iter().any(|u| u == name) {
            self.levers.impersonators.push(name.to_string());
        }
        self
    }
}

/// All lever settings of one server.
#[derive(Debug)]
pub struct Levers {
    /// Added latency per request.
    pub latency: Duration,
    /// Extra latency for requests of one verb under one path prefix (added to `latency`),
    /// before the request is handled: a slow write lets concurrent clients read first.
    pub slow: Vec<(String, String, Duration)>,
    /// Fault rules, checked in order; the first that fires wins.
    pub faults: Vec<Fault>,
    /// Denials.
    pub denials: Vec<Denial>,
    /// Extra users and impersonators.
    pub users: Users,
    /// Request log.
    pub log: RequestLog,
    /// Where each request is also appended as a JSON line (`--request-log FILE`).
    pub log_file: Option<std::fs::File>,
    /// The `APIResponseCompression` gate at the version's default (true) or turned off (false).
    pub response_compression: bool,
    rng: StdRng,
}

impl Levers {
    /// The latency of one request: the general one plus every matching slow rule (verb as a
    /// Kubernetes verb or an upper-case HTTP method, as [`Fault`] matches them).
    pub fn latency_of(&self, method: &str, verb: &str, path: &str) -> Duration {
        self.latency
            + self
                .slow
                .iter()
                .filter(|(v, p, _)| (v == verb || v == method) && path.starts_with(p.as_str()))
                .map(|(_, _, d)| *d)
                .sum::<Duration>()
    }

    /// Levers with the given seed for the fault RNG.
    pub fn new(seed: u64) -> Self {
        Levers {
            latency: Duration::ZERO,
            slow: Vec::new(),
            faults: Vec::new(),
            denials: Vec::new(),
            users: Users::default(),
            log: RequestLog::default(),
            log_file: None,
            response_compression: true,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The user a bearer token authenticates as (`admin_token` is `kube-sim`'s).
    pub fn user_of(&self, token: &str, admin_token: &str) -> Option<String> {
        if token == admin_token {
            return Some(crate::server::USER.to_string());
        }
        self.users
            .tokens
            .iter()
            .find(|(_, t)| t.as_str() == token)
            .map(|(n, _)| n.clone())
    }

    /// Records a request: in memory, and as a JSON line in the log file when there is one (a
    /// failed write is reported on stderr once per request, never fatal).
    pub fn record(&mut self, r: RequestRecord) {
        if let Some(f) = self.log_file.as_mut() {
            use std::io::Write as _;
            if let Err(e) = writeln!(f, "{}", r.json_line()) {
                eprintln!("kube-sim: cannot append to the request log: {e}");
            }
        }
        self.log.records.push(r);
    }

    /// Does a denial lever take the `impersonate` verb on `resource` (`users`, `groups`,
    /// `serviceaccounts`, `userextras/<key>`, `uids`) away?
    pub fn impersonation_denied(
        &self,
        resource: &str,
        group: &str,
        namespace: Option<&str>,
    ) -> bool {
        self.denials
            .iter()
            .any(|d| d.matches("impersonate", group, resource, namespace))
    }

    /// Re-seeds the fault RNG (same seed, same sequence of faults).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// The fault to inject into this request, if any.
    pub fn pick_fault(&mut self, method: &str, verb: &str, path: &str) -> Option<FaultKind> {
        for i in 0..self.faults.len() {
            if !self.faults[i].matches(method, verb, path) {
                continue;
            }
            let rate = self.faults[i].rate;
            // Always draw, so a seed gives the same sequence whatever the rates are.
            let roll: f64 = self.rng.random();
            if roll < rate {
                let f = &mut self.faults[i];
                if let Some(t) = f.times.as_mut() {
                    *t -= 1;
                }
                return Some(f.kind);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_faults_repeat() {
        let run = |seed| {
            let mut l = Levers::new(seed);
            l.faults.push(Fault::rate(FaultKind::InternalError, 0.5));
            (0..64)
                .map(|_| l.pick_fault("GET", "get", "/x").is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let hits = run(7).iter().filter(|h| **h).count();
        assert!((16..48).contains(&hits), "rate 0.5 gave {hits}/64");
    }

    #[test]
    fn fault_by_verb_and_path_with_times() {
        let mut l = Levers::new(1);
        l.faults.push(
            Fault::on(
                FaultKind::ConnectionReset,
                "create",
                "/api/v1/namespaces/a/",
            )
            .times(1),
        );
        assert_eq!(
            l.pick_fault("GET", "get", "/api/v1/namespaces/a/secrets"),
            None
        );
        assert_eq!(
            l.pick_fault("POST", "create", "/api/v1/namespaces/a/secrets"),
            Some(FaultKind::ConnectionReset)
        );
        assert_eq!(
            l.pick_fault("POST", "create", "/api/v1/namespaces/a/secrets"),
            None
        );
    }

    #[test]
    fn denial_matching() {
        let d = Denial {
            verb: "create".into(),
            resource: "serviceaccounts/token".into(),
            namespace: Some("ns".into()),
        };
        assert!(d.matches("create", "", "serviceaccounts/token", Some("ns")));
        assert!(!d.matches("create", "", "serviceaccounts/token", Some("other")));
        let d = Denial {
            verb: "*".into(),
            resource: "destinationrules.networking.istio.io".into(),
            namespace: None,
        };
        assert!(d.matches("list", "networking.istio.io", "destinationrules", None));
    }

    #[test]
    fn discovery_paths() {
        assert!(is_discovery_path("/apis/apps/v1"));
        assert!(is_discovery_path("/openapi/v3/api/v1"));
        assert!(!is_discovery_path("/api/v1/namespaces"));
    }
}
