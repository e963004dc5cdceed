//! `doctor --prometheus`: who sends plaintext right now, from the mesh's own telemetry.
//!
//! Configuration tells what *could* break under STRICT; the sidecars' metrics tell who *is*
//! still sending plaintext. Doctor asks Prometheus's HTTP API (`GET /api/v1/query`) for traffic
//! that in-mesh workloads received (`reporter="destination"`: the destination's sidecar
//! reported it) without mTLS (`connection_security_policy!="mutual_tls"`) in the window, and
//! turns each destination namespace into one `traffic.plaintext` finding: warn when the
//! namespace is not STRICT yet (STRICT would refuse that traffic), fail when it is STRICT
//! already (the traffic is being refused or was accepted by an exception).
//!
//! The metric and label names are Istio's, the same in both eras:
//! - 1.4 (Mixer's prometheus adapter, names prefixed `istio_`, istio/istio@1.4.2
//!   mixer/adapter/prometheus/prometheus.go:86 `defaultNS = "istio"`): `requests_total`
//!   (install/kubernetes/helm/istio/charts/mixer/templates/config.yaml:661-685) and
//!   `tcp_connections_opened_total` (same file :810-830), both labelled `reporter`,
//!   `source_workload`, `source_workload_namespace`, `destination_workload`,
//!   `destination_workload_namespace` and `connection_security_policy`, which is
//!   `mutual_tls` or `none` for the inbound (destination) reporter and `unknown` for the
//!   outbound one (same file :271).
//! - 1.22 (the proxy's stats, istio/istio@1.22.0 pilot/pkg/model/telemetry.go:1130-1140
//!   `REQUEST_COUNT` → `requests_total`, `TCP_OPENED_CONNECTIONS` →
//!   `tcp_connections_opened_total`), queried with the same labels by Istio's own dashboard
//!   (manifests/addons/dashboards/istio-service-dashboard.json:950,
//!   `connection_security_policy!="mutual_tls"`).
//!
//! Prometheus down, a wrong URL, a query error or no Istio series: a `traffic.plaintext`
//! warning saying there is no evidence — never a silent pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use rustls::pki_types::pem::PemObject as _;
use serde::Deserialize;

use super::Finding;
use super::mesh::{ModeAt, PeerMode};
use crate::errors::{Diagnose, UsageError};

/// The check id of every finding this module makes.
pub const CHECK: &str = "traffic.plaintext";

/// What the SARIF rule and the README say the check looks at.
pub const DESCRIBE: &str = "With --prometheus: plaintext traffic into in-mesh workloads in the window (istio_requests_total, istio_tcp_connections_opened_total, reporter=destination)";

/// The two counters doctor reads.
const REQUESTS: &str = "istio_requests_total";
const CONNECTIONS: &str = "istio_tcp_connections_opened_total";

/// The labels a flow is grouped by.
const LABELS: &str = "source_workload, source_workload_namespace, destination_workload, destination_workload_namespace, connection_security_policy";

/// How long one query may take (Prometheus's own default query timeout is 2m; a doctor run
/// should not hang that long on one slow server).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a response body doctor reads.
const BODY_LIMIT: usize = 16 << 20;

/// `--window`: a Prometheus duration such as `30m`, `24h`, `7d` or `1h30m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// As given (and as put into the PromQL range selector).
    pub text: String,
    /// In seconds.
    pub seconds: u64,
}

impl Window {
    /// Parse one or more `<number><unit>` parts, units `s`, `m`, `h`, `d`, `w` in decreasing
    /// order (a subset of Prometheus's duration syntax, prometheus/common model.ParseDuration).
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        let bad = || {
            UsageError::new(
                format!("--window {text}: not a duration"),
                Some("give a Prometheus duration such as 30m, 24h, 7d or 1h30m"),
            )
        };
        let mut seconds: u64 = 0;
        let mut last_unit = u64::MAX;
        let mut rest = text;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            let unit = match rest[digits..].chars().next() {
                Some('s') => 1,
                Some('m') => 60,
                Some('h') => 3600,
                Some('d') => 86_400,
                Some('w') => 604_800,
                _ => return Err(bad()),
            };
            if unit >= last_unit {
                return Err(bad());
            }
            last_unit = unit;
            seconds = n
                .checked_mul(unit)
                .and_then(|s| seconds.checked_add(s))
                .ok_or_else(bad)?;
            rest = &rest[digits + 1..];
        }
        if seconds == 0 {
            return Err(bad());
        }
        Ok(Self {
            text: text.to_string(),
            seconds,
        })
    }
}

/// One `--prometheus-header NAME: VALUE`. A value word `@FILE` stands for the file's content
/// (trailing newline dropped), read at run time and never printed: `Authorization: Bearer
/// @/var/run/secrets/token`.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderArg {
    /// The header name.
    pub name: http::HeaderName,
    /// The value before the file's content (or the whole value).
    pub prefix: String,
    /// The file whose content ends the value.
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for HeaderArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A literal value may be a secret: only say whether it came from a file.
        match &self.file {
            Some(file) => write!(f, "{}: … @{}", self.name, file.display()),
            None => write!(f, "{}: (literal)", self.name),
        }
    }
}

impl HeaderArg {
    /// The flag's value again (`NAME: PREFIX@FILE`): the file's path, never its content.
    pub fn as_flag(&self) -> String {
        match &self.file {
            Some(file) => format!("{}: {}@{}", self.name, self.prefix, file.display()),
            None => format!("{}: {}", self.name, self.prefix),
        }
    }

    /// Parse `NAME: VALUE`. An `Authorization` value must come from a file: a token on the
    /// command line ends up in shell history and the process list.
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        let Some((name, value)) = text.split_once(':') else {
            return Err(UsageError::new(
                "--prometheus-header: expected NAME: VALUE",
                Some(
                    "e.g. --prometheus-header 'Authorization: Bearer @/path/to/token' (the token is read from the file)",
                ),
            ));
        };
        let name = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            UsageError::new(
                format!(
                    "--prometheus-header: {:?} is not an HTTP header name",
                    name.trim()
                ),
                Some("e.g. --prometheus-header 'Authorization: Bearer @/path/to/token'"),
            )
        })?;
        let value = value.trim_start();
        let (prefix, file) = match value.find('@') {
            Some(at) if value[at + 1..].trim().is_empty() => {
                return Err(UsageError::new(
                    format!("--prometheus-header {name}: @ names no file"),
                    Some("write @ and the file's path: 'Authorization: Bearer @/path/to/token'"),
                ));
            }
            Some(at) => (
                value[..at].to_string(),
                Some(PathBuf::from(value[at + 1..].trim())),
            ),
            None => (value.to_string(), None),
        };
        if file.is_none() && name == http::header::AUTHORIZATION {
            return Err(UsageError::new(
                "--prometheus-header Authorization: the credential must come from a file (@FILE), not the command line",
                Some(
                    "put the token in a file readable only by you and pass --prometheus-header 'Authorization: Bearer @/path/to/token'",
                ),
            ));
        }
        Ok(Self { name, prefix, file })
    }
}

/// `--prometheus` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusOptions {
    /// The base URL, without a trailing slash (it may carry a path prefix).
    pub url: String,
    /// `--window`.
    pub window: Window,
    /// `--prometheus-header`.
    pub headers: Vec<HeaderArg>,
    /// `--prometheus-ca`: PEM roots to trust instead of the system's.
    pub ca: Option<PathBuf>,
}

impl PrometheusOptions {
    /// Validate the flags (no IO).
    pub fn resolve(
        url: &str,
        window: &str,
        headers: &[String],
        ca: Option<PathBuf>,
    ) -> Result<Self, UsageError> {
        let parsed: Option<http::Uri> = url.parse().ok();
        let ok = parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && u.query().is_none()
        });
        if !ok {
            return Err(UsageError::new(
                format!("--prometheus {url}: not an http:// or https:// URL"),
                Some(
                    "give Prometheus's base URL, e.g. --prometheus http://prometheus.istio-system:9090 (with its path prefix, if any, and no query)",
                ),
            ));
        }
        if ca.is_some() && parsed.as_ref().and_then(http::Uri::scheme_str) != Some("https") {
            return Err(UsageError::new(
                "--prometheus-ca goes with an https:// --prometheus URL",
                Some("use the https:// URL of Prometheus, or drop --prometheus-ca"),
            ));
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            window: Window::parse(window)?,
            headers: headers
                .iter()
                .map(|h| HeaderArg::parse(h))
                .collect::<Result<_, _>>()?,
            ca,
        })
    }
}

/// Why the Prometheus client could not be set up from the flags' files.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A `--prometheus-header` `@FILE` could not be read.
    #[error("--prometheus-header {name}: cannot read {}", path.display())]
    HeaderFile {
        /// The header.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A header file's content is not a valid header value (it is not printed).
    #[error(
        "--prometheus-header {name}: the content of {} is not a valid HTTP header value",
        path.display()
    )]
    HeaderValue {
        /// The header.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// `--prometheus-ca` could not be read or holds no certificate.
    #[error("--prometheus-ca {}: {why}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The system's trust store could not be loaded.
    #[error("cannot load the system's CA certificates for --prometheus: {0}")]
    NativeRoots(String),
}

impl Diagnose for SetupError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            SetupError::HeaderFile { path, .. } | SetupError::HeaderValue { path, .. } => format!(
                "write the credential alone on one line of {} (check it with `wc -l {}`; doctor never prints it)",
                path.display(),
                path.display()
            ),
            SetupError::Ca { path, .. } => format!(
                "give the PEM file of the CA that signed Prometheus's serving certificate (check it with `openssl x509 -noout -subject -in {}`)",
                path.display()
            ),
            SetupError::NativeRoots(_) => {
                "pass the CA that signed Prometheus's certificate with --prometheus-ca FILE".into()
            }
        })
    }
}

/// One source → destination pair seen sending plaintext in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// `source_workload` (`unknown` when the client has no sidecar to say).
    pub source_workload: String,
    /// `source_workload_namespace`.
    pub source_namespace: String,
    /// `destination_workload`.
    pub dest_workload: String,
    /// `destination_workload_namespace`.
    pub dest_namespace: String,
    /// `connection_security_policy` (`none`, or `unknown`).
    pub policy: String,
    /// Which counter: requests or TCP connections.
    pub tcp: bool,
    /// How many in the window (Prometheus's `increase`, so extrapolated, not whole).
    pub count: f64,
}

/// What Prometheus said.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// The plaintext flows of the window (none: all received traffic was mTLS).
    Flows(Vec<Flow>),
    /// Prometheus answered but holds no Istio series in the window.
    NoSeries,
    /// No answer to trust: why.
    Unavailable(String),
}

/// A client for one Prometheus.
pub struct Client {
    opts: PrometheusOptions,
    http: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Empty<bytes::Bytes>,
    >,
    headers: http::HeaderMap,
}

impl Client {
    /// Read the header files and the CA, and build the HTTP client (no request yet).
    pub fn new(opts: &PrometheusOptions) -> Result<Self, SetupError> {
        let mut headers = http::HeaderMap::new();
        for h in &opts.headers {
            let mut value = h.prefix.clone();
            if let Some(path) = &h.file {
                let content =
                    std::fs::read_to_string(path).map_err(|source| SetupError::HeaderFile {
                        name: h.name.to_string(),
                        path: path.clone(),
                        source,
                    })?;
                value.push_str(content.trim_end_matches(['\n', '\r']));
            }
            let mut value =
                http::HeaderValue::from_str(&value).map_err(|_| SetupError::HeaderValue {
                    name: h.name.to_string(),
                    path: h.file.clone().unwrap_or_default(),
                })?;
            // Kept out of debug logs of the HTTP stack.
            value.set_sensitive(true);
            headers.append(h.name.clone(), value);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &opts.ca {
            Some(path) => {
                let ca_err = |why: String| SetupError::Ca {
                    path: path.clone(),
                    why,
                };
                let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| ca_err(format!("not PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| ca_err(format!("not a CA certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(ca_err("holds no CERTIFICATE block".into()));
                }
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ca_err(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None => builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| SetupError::NativeRoots(e.to_string()))?,
        };
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Self {
            opts: opts.clone(),
            http,
            headers,
        })
    }

    /// The options this client was made from.
    pub fn options(&self) -> &PrometheusOptions {
        &self.opts
    }

    /// Ask for the plaintext flows of the window; any failure is [`Evidence::Unavailable`].
    pub async fn evidence(&self) -> Evidence {
        match self.flows().await {
            Ok(Some(flows)) => Evidence::Flows(flows),
            Ok(None) => Evidence::NoSeries,
            Err(why) => Evidence::Unavailable(why),
        }
    }

    async fn flows(&self) -> Result<Option<Vec<Flow>>, String> {
        let w = &self.opts.window.text;
        let mut present = Vec::new();
        for metric in [REQUESTS, CONNECTIONS] {
            let count = self
                .query(&format!(
                    "count(count_over_time({metric}{{reporter=\"destination\"}}[{w}]))"
                ))
                .await?;
            if !count.is_empty() {
                present.push(metric);
            }
        }
        if present.is_empty() {
            return Ok(None);
        }
        let mut flows = Vec::new();
        for metric in present {
            let samples = self.query(&plaintext_query(metric, w)).await?;
            for s in samples {
                flows.push(flow_of(&s, metric == CONNECTIONS)?);
            }
        }
        flows.sort_by(|a, b| {
            (&a.dest_namespace, &a.dest_workload, a.tcp)
                .cmp(&(&b.dest_namespace, &b.dest_workload, b.tcp))
                .then(b.count.total_cmp(&a.count))
        });
        Ok(Some(flows))
    }

    /// One instant query; the vector it returns, or why not.
    async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self
            .get("/api/v1/query", &format!("query={}", encode(promql)))
            .await?;
        match serde_json::from_value::<ApiData>(data) {
            Ok(data) if data.result_type == "vector" => Ok(data.result),
            Ok(data) => Err(format!(
                "Prometheus at {} answered a {} where a vector was expected",
                self.opts.url, data.result_type
            )),
            Err(e) => Err(format!(
                "Prometheus at {} answered the query in an unknown form: {e}",
                self.opts.url
            )),
        }
    }

    /// `GET {url}{path}?{query}` of Prometheus's HTTP API: its `data`, or why not.
    async fn get(&self, path: &str, query: &str) -> Result<serde_json::Value, String> {
        let endpoint = format!("{}{path}", self.opts.url);
        let uri = if query.is_empty() {
            endpoint.clone()
        } else {
            format!("{endpoint}?{query}")
        };
        let mut request = http::Request::get(&uri)
            .body(http_body_util::Empty::new())
            .map_err(|e| format!("cannot build a request to {endpoint}: {e}"))?;
        request.headers_mut().extend(self.headers.clone());
        request.headers_mut().insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let response = tokio::time::timeout(QUERY_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| {
                format!(
                    "Prometheus at {} did not answer within {}s",
                    self.opts.url,
                    QUERY_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| {
                let why = chain(&e);
                let advice = if why.contains("certificate") && self.opts.ca.is_none() {
                    " (trust the CA that signed its certificate with --prometheus-ca FILE)"
                } else {
                    ""
                };
                format!(
                    "cannot reach Prometheus at {}: {why}{advice}",
                    self.opts.url
                )
            })?;
        let status = response.status();
        let body = tokio::time::timeout(
            QUERY_TIMEOUT,
            http_body_util::Limited::new(response.into_body(), BODY_LIMIT).collect(),
        )
        .await
        .map_err(|_| format!("Prometheus at {} stopped answering", self.opts.url))?
        .map_err(|e| format!("reading Prometheus's answer from {endpoint}: {e}"))?
        .to_bytes();
        // Prometheus answers errors as JSON too (400 bad_data, 422 execution, 503 timeout;
        // prometheus/prometheus web/api/v1/api.go returnAPIError).
        match serde_json::from_slice::<ApiResponse>(&body) {
            Ok(ApiResponse {
                status: s,
                data: Some(data),
                ..
            }) if s == "success" => Ok(data),
            Ok(ApiResponse {
                error_type, error, ..
            }) if error.is_some() => Err(format!(
                "Prometheus at {} refused the query ({}: {})",
                self.opts.url,
                error_type.unwrap_or_default(),
                error.unwrap_or_default()
            )),
            _ if status == http::StatusCode::UNAUTHORIZED
                || status == http::StatusCode::FORBIDDEN =>
            {
                Err(format!(
                    "HTTP {status} from {endpoint}: Prometheus wants credentials (--prometheus-header 'Authorization: Bearer @FILE')"
                ))
            }
            _ => Err(format!(
                "HTTP {status} from {endpoint} is not Prometheus's query API (a wrong URL or path prefix?)"
            )),
        }
    }

    /// Whether Prometheus holds any Istio series reported by a destination now (the last 5
    /// minutes, PromQL's lookback): without them, "no new plaintext" would prove nothing.
    pub async fn istio_series_now(&self) -> Result<bool, String> {
        for metric in [REQUESTS, CONNECTIONS] {
            if !self
                .query(&format!("count({metric}{{reporter=\"destination\"}})"))
                .await?
                .is_empty()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The plaintext flows into `namespace` since `elapsed` ago (by this machine's monotonic
    /// clock, so a Prometheus whose clock differs from ours is asked the same span).
    pub async fn plaintext_since(
        &self,
        namespace: &str,
        elapsed: Duration,
    ) -> Result<Vec<Flow>, String> {
        let mut flows = Vec::new();
        for metric in [REQUESTS, CONNECTIONS] {
            let samples = self.query(&since_query(metric, namespace, elapsed)).await?;
            for s in samples {
                flows.push(flow_of(&s, metric == CONNECTIONS)?);
            }
        }
        Ok(flows)
    }

    /// How often Prometheus scrapes the Istio series: the longest `scrape_interval` of the jobs
    /// that hold them (the global one when none does yet), from the configuration Prometheus
    /// runs (`GET /api/v1/status/config`, prometheus/prometheus@v2.12.0
    /// web/api/v1/api.go:241,832-837: the loaded config with its defaults filled in); with
    /// why that is the answer.
    pub async fn scrape_interval(&self) -> Result<(Duration, String), String> {
        let data = self.get("/api/v1/status/config", "").await?;
        let yaml = data
            .get("yaml")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                format!(
                    "Prometheus at {} answered /api/v1/status/config without its configuration",
                    self.opts.url
                )
            })?;
        let config: serde_json::Value = serde_saphyr::from_str(yaml).map_err(|e| {
            format!(
                "Prometheus at {} answered a configuration doctor cannot read: {e}",
                self.opts.url
            )
        })?;
        let mut jobs: Vec<String> = Vec::new();
        for metric in [REQUESTS, CONNECTIONS] {
            for s in self.query(&format!("count by (job) ({metric})")).await? {
                if let Some(job) = s.metric.get("job")
                    && !jobs.contains(job)
                {
                    jobs.push(job.clone());
                }
            }
        }
        Ok(scrape_interval_of(&config, &jobs))
    }
}

/// The longest `scrape_interval` of `jobs` in a Prometheus configuration (each job's own, else
/// the global one, else Prometheus's default of 1m, prometheus/prometheus@v2.42.0
/// config/config.go:141-145), or the global one when `jobs` is empty or none is configured.
pub fn scrape_interval_of(config: &serde_json::Value, jobs: &[String]) -> (Duration, String) {
    let parse = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .and_then(parse_prometheus_duration)
    };
    let global =
        parse(config.pointer("/global/scrape_interval")).unwrap_or(DEFAULT_SCRAPE_INTERVAL);
    let mut longest: Option<(Duration, String)> = None;
    for job in config
        .get("scrape_configs")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = job.get("job_name").and_then(serde_json::Value::as_str) else {
            continue;
        };
        if !jobs.iter().any(|j| j == name) {
            continue;
        }
        let every = parse(job.get("scrape_interval")).unwrap_or(global);
        if longest.as_ref().is_none_or(|(d, _)| every > *d) {
            longest = Some((every, format!("job {name}'s scrape_interval")));
        }
    }
    longest.unwrap_or((global, "the global scrape_interval".into()))
}

/// Prometheus's default `scrape_interval` (prometheus/prometheus@v2.42.0 config/config.go:141-145).
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);

/// A Prometheus duration as its config prints them (`15s`, `1m`, `1m30s`, `500ms`).
fn parse_prometheus_duration(text: &str) -> Option<Duration> {
    crate::flags::parse_duration(text).ok().or_else(|| {
        Window::parse(text)
            .ok()
            .map(|w| Duration::from_secs(w.seconds))
    })
}

/// One result row as a [`Flow`].
fn flow_of(s: &Sample, tcp: bool) -> Result<Flow, String> {
    let label = |k: &str| s.metric.get(k).cloned().unwrap_or_default();
    let count: f64 = s.value.1.parse().map_err(|_| {
        format!(
            "Prometheus returned {:?} where a number was expected",
            s.value.1
        )
    })?;
    Ok(Flow {
        source_workload: label("source_workload"),
        source_namespace: label("source_workload_namespace"),
        dest_workload: label("destination_workload"),
        dest_namespace: label("destination_workload_namespace"),
        policy: label("connection_security_policy"),
        tcp,
        count,
    })
}

/// The PromQL for one counter's plaintext flows into `namespace` since `elapsed` ago: each
/// flow's counter now minus its counter then (`offset`: the value at that moment, PromQL's
/// 5-minute lookback), and flows that had no series then at all (a client that began sending
/// after; `unless`). Not `increase()` over the span: it counts only growth between samples
/// inside the span, so it misses what arrived before the first scrape after the change and
/// every flow whose series is new (its first sample is its first count).
pub fn since_query(metric: &str, namespace: &str, elapsed: Duration) -> String {
    let selector = format!(
        "{metric}{{reporter=\"destination\",connection_security_policy!=\"mutual_tls\",destination_workload_namespace=\"{}\"}}",
        namespace.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let offset = format!("{}ms", elapsed.as_millis().max(1));
    let now = format!("sum by ({LABELS}) ({selector})");
    let then = format!("sum by ({LABELS}) ({selector} offset {offset})");
    format!("(({now}) - ({then}) > 0) or (({now}) unless ({then}))")
}

/// The PromQL for one counter's plaintext flows in the window.
pub fn plaintext_query(metric: &str, window: &str) -> String {
    format!(
        "sum by ({LABELS}) (increase({metric}{{reporter=\"destination\",connection_security_policy!=\"mutual_tls\"}}[{window}])) > 0"
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    data: Option<serde_json::Value>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiData {
    result_type: String,
    #[serde(default)]
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// An error and its causes, for a one-line message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            let _ = write!(text, ": {s}");
        }
        cause = c.source();
    }
    text
}

/// Percent-encode a query parameter value (RFC 3986 unreserved characters stay).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A word for the shell: as is when safe, else single-quoted.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=%+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

/// The findings of the evidence. `mode` says a namespace's peer authentication mode (and what
/// sets it).
pub fn findings<'a>(
    evidence: &Evidence,
    opts: &PrometheusOptions,
    mode: impl Fn(&str) -> ModeAt<'a>,
) -> Vec<Finding> {
    let window = &opts.window.text;
    // The same flags again (header files by path, never their content).
    let mut recheck = format!(
        "`kubectl meshvm doctor --prometheus {} --window {}",
        shell_word(&opts.url),
        shell_word(window)
    );
    for h in &opts.headers {
        let _ = write!(recheck, " --prometheus-header {}", shell_word(&h.as_flag()));
    }
    if let Some(ca) = &opts.ca {
        let _ = write!(
            recheck,
            " --prometheus-ca {}",
            shell_word(&ca.to_string_lossy())
        );
    }
    recheck.push('`');
    match evidence {
        Evidence::Unavailable(why) => vec![
            Finding::warn(CHECK, format!("no evidence: {why}; who sends plaintext is unknown"))
                .when_strict()
                .hint(format!(
                    "check that Prometheus answers (`curl -sS{} {}/-/ready`), then re-run {recheck}",
                    opts.ca.as_ref().map_or(String::new(), |ca| format!(
                        " --cacert {}",
                        shell_word(&ca.to_string_lossy())
                    )),
                    shell_word(&opts.url)
                )),
        ],
        Evidence::NoSeries => vec![
            Finding::warn(
                CHECK,
                format!(
                    "no evidence: no {REQUESTS} series (nor {CONNECTIONS}) with reporter=\"destination\" in the last {window} at {}: Prometheus does not scrape the sidecars, or the mesh had no traffic",
                    opts.url
                ),
            )
            .when_strict()
            .hint(format!(
                "scrape the sidecars' Istio metrics into this Prometheus (see `curl -sSG {}/api/v1/query --data-urlencode 'query=count(istio_requests_total)'`), then re-run {recheck}",
                shell_word(&opts.url)
            )),
        ],
        Evidence::Flows(flows) if flows.is_empty() => vec![Finding::pass(
            CHECK,
            format!(
                "no plaintext into in-mesh workloads in the last {window} ({REQUESTS}, {CONNECTIONS} at {})",
                opts.url
            ),
        )],
        Evidence::Flows(flows) => {
            let mut by_ns: BTreeMap<&str, Vec<&Flow>> = BTreeMap::new();
            for f in flows {
                by_ns.entry(f.dest_namespace.as_str()).or_default().push(f);
            }
            by_ns
                .into_iter()
                .map(|(ns, flows)| namespace_finding(ns, &flows, opts, &mode(ns), &recheck))
                .collect()
        }
    }
}

fn namespace_finding(
    ns: &str,
    flows: &[&Flow],
    opts: &PrometheusOptions,
    mode: &ModeAt<'_>,
    recheck: &str,
) -> Finding {
    let window = &opts.window.text;
    let seconds = opts.window.seconds as f64;
    let names: Vec<String> = flows
        .iter()
        .map(|f| {
            let (unit, per) = if f.tcp {
                ("TCP connections", "conn/s")
            } else {
                ("requests", "req/s")
            };
            format!(
                "{}/{} → {}/{} ({:.0} {unit}, {:.3} {per}, connection_security_policy={})",
                f.source_namespace,
                f.source_workload,
                f.dest_namespace,
                f.dest_workload,
                f.count,
                f.count / seconds,
                f.policy
            )
        })
        .collect();
    let shown = if ns.is_empty() { "(no namespace)" } else { ns };
    let strict = mode.mode == PeerMode::Strict;
    let by = mode.by.map_or_else(
        || "Istio's default".to_string(),
        crate::snapshot::Obj::reference,
    );
    let message = if strict {
        format!(
            "{shown} is STRICT ({by}) yet received plaintext in the last {window}: {}; these clients are refused now",
            names.join("; ")
        )
    } else {
        format!(
            "plaintext into {shown} in the last {window}: {}; {shown} is {} ({by}): STRICT would refuse these clients",
            names.join("; "),
            mode.mode.as_str()
        )
    };
    // Clients in a known namespace can get a sidecar; `unknown` ones are outside the mesh.
    let mut source_nss: Vec<&str> = flows
        .iter()
        .map(|f| f.source_namespace.as_str())
        .filter(|n| !n.is_empty() && *n != "unknown")
        .collect();
    source_nss.sort_unstable();
    source_nss.dedup();
    let mut hint = String::from("make these clients send Istio mTLS: ");
    if source_nss.is_empty() {
        hint.push_str(
            "they are outside the mesh (source unknown), so route them through an ingress gateway",
        );
    } else {
        let labels: Vec<String> = source_nss
            .iter()
            .map(|n| {
                format!(
                    "`kubectl label namespace {} istio-injection=enabled --overwrite`",
                    shell_word(n)
                )
            })
            .collect();
        let _ = write!(
            hint,
            "inject their sidecars ({}, then restart their pods)",
            labels.join(", ")
        );
    }
    if strict {
        let _ = write!(
            hint,
            ", or set {shown} back to PERMISSIVE until they do; then re-check with {recheck}"
        );
    } else {
        let _ = write!(
            hint,
            ", or keep {shown} off STRICT until they do; then re-check with {recheck}"
        );
    }
    let finding = if strict {
        Finding::fail(CHECK, message).now()
    } else {
        Finding::warn(CHECK, message).when_strict()
    };
    finding
        .object(if ns.is_empty() {
            String::new()
        } else {
            format!("Namespace {ns}")
        })
        .ns(ns)
        .hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity;

    fn opts() -> PrometheusOptions {
        PrometheusOptions::resolve("http://127.0.0.1:9090/", "24h", &[], None).unwrap()
    }

    fn flow(src: &str, dst: &str, tcp: bool, count: f64) -> Flow {
        let (sn, sw) = src.split_once('/').unwrap();
        let (dn, dw) = dst.split_once('/').unwrap();
        Flow {
            source_workload: sw.into(),
            source_namespace: sn.into(),
            dest_workload: dw.into(),
            dest_namespace: dn.into(),
            policy: "none".into(),
            tcp,
            count,
        }
    }

    #[test]
    fn windows_are_prometheus_durations() {
        assert_eq!(Window::parse("24h").unwrap().seconds, 86_400);
        assert_eq!(Window::parse("1h30m").unwrap().seconds, 5_400);
        assert_eq!(Window::parse("7d").unwrap().seconds, 604_800);
        for bad in ["", "24", "h", "0h", "30m1h", "1.5h", "24h ", "-1h", "1y"] {
            let e = Window::parse(bad).unwrap_err();
            assert!(e.message.contains("not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn headers_read_credentials_from_files_only() {
        let h = HeaderArg::parse("Authorization: Bearer @/run/token").unwrap();
        assert_eq!(h.name, http::header::AUTHORIZATION);
        assert_eq!(h.prefix, "Bearer ");
        assert_eq!(h.file.as_deref(), Some(std::path::Path::new("/run/token")));
        assert_eq!(format!("{h:?}"), "authorization: … @/run/token");
        assert_eq!(h.as_flag(), "authorization: Bearer @/run/token");
        let literal = HeaderArg::parse("X-Scope-OrgID: tenant-1").unwrap();
        assert_eq!((literal.prefix.as_str(), literal.file), ("tenant-1", None));
        let e = HeaderArg::parse("Authorization: Bearer s3cret").unwrap_err();
        assert!(
            e.message.contains("must come from a file") && !e.to_string().contains("s3cret"),
            "{e}"
        );
        assert!(HeaderArg::parse("no colon").is_err());
        assert!(HeaderArg::parse("Authorization: Bearer @").is_err());
        assert!(HeaderArg::parse("bad name: x").is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(opts().url, "http://127.0.0.1:9090");
        for bad in ["prometheus:9090", "ftp://x", "http://x/?a=b", ""] {
            assert!(
                PrometheusOptions::resolve(bad, "24h", &[], None).is_err(),
                "{bad}"
            );
        }
        let e =
            PrometheusOptions::resolve("http://x", "24h", &[], Some("ca.pem".into())).unwrap_err();
        assert!(e.message.contains("https://"), "{e}");
    }

    #[test]
    fn header_files_are_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut o = opts();
        o.headers =
            vec![HeaderArg::parse(&format!("Authorization: Bearer @{}", token.display())).unwrap()];
        let client = Client::new(&o).unwrap();
        let v = &client.headers[http::header::AUTHORIZATION];
        assert_eq!(v.to_str().unwrap(), "Bearer s3cret");
        assert!(v.is_sensitive());
        o.headers = vec![
            HeaderArg::parse(&format!(
                "Authorization: Bearer @{}/missing",
                dir.path().display()
            ))
            .unwrap(),
        ];
        let Err(e) = Client::new(&o) else {
            panic!("a missing token file is an error")
        };
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::write(&token, "two\nlines\n").unwrap();
        o.headers =
            vec![HeaderArg::parse(&format!("Authorization: Bearer @{}", token.display())).unwrap()];
        let Err(e) = Client::new(&o) else {
            panic!("a newline inside is an error")
        };
        assert!(
            !e.to_string().contains("two") && !e.hint().unwrap().contains("lines"),
            "{e}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not pem\n").unwrap();
        let o = PrometheusOptions::resolve("https://p:9090", "24h", &[], Some(ca)).unwrap();
        let Err(e) = Client::new(&o) else {
            panic!("no certificate in the CA file")
        };
        assert!(e.to_string().contains("holds no CERTIFICATE"), "{e}");
    }

    #[test]
    fn queries_are_the_documented_promql() {
        assert_eq!(
            plaintext_query(REQUESTS, "24h"),
            "sum by (source_workload, source_workload_namespace, destination_workload, destination_workload_namespace, connection_security_policy) (increase(istio_requests_total{reporter=\"destination\",connection_security_policy!=\"mutual_tls\"}[24h])) > 0"
        );
        assert_eq!(encode("a b{c=\"d\"}[1h]"), "a%20b%7Bc%3D%22d%22%7D%5B1h%5D");
    }

    #[test]
    fn since_is_now_minus_then_plus_new_series() {
        let q = since_query(REQUESTS, "pay", Duration::from_millis(2500));
        let sel = "istio_requests_total{reporter=\"destination\",connection_security_policy!=\"mutual_tls\",destination_workload_namespace=\"pay\"}";
        let now = format!("sum by ({LABELS}) ({sel})");
        let then = format!("sum by ({LABELS}) ({sel} offset 2500ms)");
        assert_eq!(
            q,
            format!("(({now}) - ({then}) > 0) or (({now}) unless ({then}))")
        );
        assert!(
            since_query(REQUESTS, "a\"b", Duration::ZERO)
                .contains("namespace=\"a\\\"b\"} offset 1ms")
        );
    }

    #[test]
    fn the_scrape_interval_is_the_longest_of_the_istio_jobs() {
        let config: serde_json::Value = serde_saphyr::from_str(
            "global: {scrape_interval: 30s}\nscrape_configs:\n- {job_name: envoy-stats, scrape_interval: 15s}\n- {job_name: pilot, scrape_interval: 1m30s}\n- {job_name: node}\n",
        )
        .unwrap();
        let jobs = |j: &[&str]| j.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert_eq!(
            scrape_interval_of(&config, &jobs(&["envoy-stats"])),
            (
                Duration::from_secs(15),
                "job envoy-stats's scrape_interval".into()
            )
        );
        assert_eq!(
            scrape_interval_of(&config, &jobs(&["envoy-stats", "pilot"])).0,
            Duration::from_secs(90)
        );
        // A job without its own interval has the global one.
        assert_eq!(
            scrape_interval_of(&config, &jobs(&["node"])).0,
            Duration::from_secs(30)
        );
        assert_eq!(
            scrape_interval_of(&config, &[]),
            (Duration::from_secs(30), "the global scrape_interval".into())
        );
        assert_eq!(
            scrape_interval_of(&serde_json::json!({}), &[]).0,
            DEFAULT_SCRAPE_INTERVAL
        );
    }

    #[test]
    fn one_finding_per_destination_namespace_warn_or_fail_by_its_mode() {
        let evidence = Evidence::Flows(vec![
            flow(
                "legacy/batch-reporter",
                "bookinfo/reviews-v1",
                false,
                3600.0,
            ),
            flow("legacy/batch-reporter", "bookinfo/ratings-v1", true, 864.0),
            flow("unknown/unknown", "shop/cart", false, 10.0),
        ]);
        let mode = |ns: &str| ModeAt {
            mode: if ns == "shop" {
                PeerMode::Strict
            } else {
                PeerMode::Permissive
            },
            by: None,
        };
        let found = findings(&evidence, &opts(), mode);
        assert_eq!(found.len(), 2, "{found:#?}");
        let bookinfo = &found[0];
        assert_eq!(bookinfo.severity, Severity::Warn);
        assert_eq!(bookinfo.namespaces, ["bookinfo"]);
        assert_eq!(bookinfo.object, "Namespace bookinfo");
        assert!(
            bookinfo.message.contains(
                "legacy/batch-reporter → bookinfo/reviews-v1 (3600 requests, 0.042 req/s"
            ) && bookinfo.message.contains(
                "legacy/batch-reporter → bookinfo/ratings-v1 (864 TCP connections, 0.010 conn/s"
            ) && bookinfo
                .message
                .contains("bookinfo is PERMISSIVE (Istio's default): STRICT would refuse"),
            "{}",
            bookinfo.message
        );
        assert!(
            bookinfo
                .hint
                .contains("`kubectl label namespace legacy istio-injection=enabled --overwrite`")
                && bookinfo.hint.contains(
                    "`kubectl meshvm doctor --prometheus http://127.0.0.1:9090 --window 24h`"
                ),
            "{}",
            bookinfo.hint
        );
        let shop = &found[1];
        assert_eq!(
            (shop.severity, shop.breaks),
            (Severity::Fail, Some(super::super::Breaks::Now))
        );
        assert!(
            shop.message
                .starts_with("shop is STRICT (Istio's default) yet received plaintext"),
            "{}",
            shop.message
        );
        assert!(shop.hint.contains("outside the mesh"), "{}", shop.hint);
    }

    #[test]
    fn no_evidence_is_a_warning_never_a_pass() {
        let mode = |_: &str| ModeAt {
            mode: PeerMode::Permissive,
            by: None,
        };
        let none = findings(&Evidence::NoSeries, &opts(), mode);
        assert_eq!(none[0].severity, Severity::Warn);
        assert!(
            none[0]
                .message
                .starts_with("no evidence: no istio_requests_total series"),
            "{}",
            none[0].message
        );
        assert!(none[0].namespaces.is_empty());
        let mut o = opts();
        o.headers = vec![HeaderArg::parse("Authorization: Bearer @/run/token").unwrap()];
        let down = findings(&Evidence::Unavailable("cannot reach".into()), &o, mode);
        assert!(
            down[0].hint.contains("`kubectl meshvm doctor --prometheus http://127.0.0.1:9090 --window 24h --prometheus-header 'authorization: Bearer @/run/token'`"),
            "the re-check carries the same flags: {}",
            down[0].hint
        );
        assert_eq!(down[0].severity, Severity::Warn);
        assert!(down[0].message.starts_with("no evidence: cannot reach"));
        assert!(
            down[0]
                .hint
                .contains("`curl -sS http://127.0.0.1:9090/-/ready`"),
            "{}",
            down[0].hint
        );
        let clean = findings(&Evidence::Flows(vec![]), &opts(), mode);
        assert_eq!(clean[0].severity, Severity::Pass);
    }
}
