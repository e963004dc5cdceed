//! Test levers: latency, fault injection, RBAC-like denials and the request log.

use std::collections::BTreeMap;
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

/// All lever settings of one server.
#[derive(Debug)]
pub struct Levers {
    /// Added latency per request.
    pub latency: Duration,
    /// Fault rules, checked in order; the first that fires wins.
    pub faults: Vec<Fault>,
    /// Denials.
    pub denials: Vec<Denial>,
    /// Request log.
    pub log: RequestLog,
    rng: StdRng,
}

impl Levers {
    /// Levers with the given seed for the fault RNG.
    pub fn new(seed: u64) -> Self {
        Levers {
            latency: Duration::ZERO,
            faults: Vec::new(),
            denials: Vec::new(),
            log: RequestLog::default(),
            rng: StdRng::seed_from_u64(seed),
        }
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
