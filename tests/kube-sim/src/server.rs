//! The HTTPS server: TLS, authentication, routing, levers, and the `Server` handle tests hold.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::ca::TokenSigner;
use crate::discovery::{self, Aggregated};
use crate::levers::{Denial, Fault, FaultKind, Levers, RequestLog, RequestRecord};
use crate::registry::ResourceType;
use crate::scenario::{Error, Scenario};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{FieldValidation, ListOpts, State, WriteOpts};
use crate::table;
use crate::util;

type Body = BoxBody<Bytes, Infallible>;

/// The user every valid token authenticates as (403 messages name it).
pub const USER: &str = "kube-sim";

struct Shared {
    state: RwLock<State>,
    levers: Mutex<Levers>,
    token: String,
    minor: RwLock<String>,
    signer: TokenSigner,
    address: String,
}

/// Where and how to serve, beyond the scenario.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Where to write the kubeconfig (None: a private temporary directory, removed on drop).
    pub kubeconfig: Option<PathBuf>,
}

/// A running simulated API server; it stops when dropped.
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    temp_dir: Option<PathBuf>,
    client_config: kube::Config,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
        if let Some(d) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

fn kubeconfig_yaml(url: &str, ca_pem: &str, token: &str) -> String {
    let ca = crate::store::b64(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: kube-sim\n  user:\n    token: {token}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\npreferences: {{}}\n"
    )
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path)?;
    f.write_all(contents.as_bytes())
}

fn tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("server key: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("server certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Server {
    /// Starts a sim on a free port of 127.0.0.1 with a kubeconfig in a private temp directory.
    ///
    /// # Panics
    /// When the scenario cannot be loaded or the port cannot be bound (use [`Server::try_start`] to handle that).
    pub async fn start(scenario: Scenario) -> Server {
        match Self::try_start(scenario, ServerOptions::default()).await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a sim with explicit options.
    pub async fn try_start(scenario: Scenario, opts: ServerOptions) -> Result<Server, Error> {
        let tls = crate::ca::server_tls();
        let cfg = tls_config(&tls.cert_pem, &tls.key_pem).map_err(Error::Start)?;
        let listener = TcpListener::bind(("127.0.0.1", opts.port))
            .await
            .map_err(|e| Error::Start(format!("cannot listen on 127.0.0.1:{}: {e}", opts.port)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Start(e.to_string()))?;
        let state = scenario.load(addr.port(), &tls.ca_pem)?;
        let mut levers = Levers::new(scenario.seed);
        levers.latency = scenario.latency;
        levers.faults.clone_from(&scenario.faults);
        levers.denials.clone_from(&scenario.denials);
        let token = random_token();
        let url = format!("https://{addr}");
        let (kubeconfig, temp_dir) = if let Some(p) = opts.kubeconfig {
            (p, None)
        } else {
            let dir = std::env::temp_dir().join(format!(
                "kube-sim-{}-{}",
                std::process::id(),
                random_token()
            ));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Start(format!("cannot create {}: {e}", dir.display())))?;
            (dir.join("kubeconfig"), Some(dir))
        };
        write_private(&kubeconfig, &kubeconfig_yaml(&url, &tls.ca_pem, &token)).map_err(|e| {
            Error::Start(format!(
                "cannot write kubeconfig {}: {e}",
                kubeconfig.display()
            ))
        })?;
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| Error::Start(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
        let client_config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Start(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            levers: Mutex::new(levers),
            token,
            minor: RwLock::new(scenario.kube_minor.clone()),
            signer: TokenSigner::new(),
            address: addr.to_string(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(Server {
            shared,
            addr,
            kubeconfig,
            temp_dir,
            client_config,
            task,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig written for this server (context `kube-sim`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bearer token the kubeconfig carries.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kube client built from the kubeconfig (call inside a tokio runtime).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.client_config.clone())
            .expect("kube client from the sim's own kubeconfig")
    }

    /// The client configuration `client()` uses, for tests that need to tweak it (e.g. no retries).
    pub fn client_config(&self) -> kube::Config {
        self.client_config.clone()
    }

    /// Adds latency to every request from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.levers().latency = latency;
    }

    /// Adds a fault rule.
    pub fn add_fault(&self, fault: Fault) {
        self.levers().faults.push(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.levers().faults.clear();
    }

    /// Re-seeds the fault RNG.
    pub fn set_seed(&self, seed: u64) {
        self.levers().reseed(seed);
    }

    /// Denies `verb` (or `*`) on `resource` (`secrets`, `serviceaccounts/token`,
    /// `destinationrules.networking.istio.io`, `*`) in `namespace` (None: everywhere) with a 403.
    pub fn deny(&self, verb: &str, resource: &str, namespace: Option<&str>) {
        self.levers().denials.push(Denial {
            verb: verb.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
        });
    }

    /// Lifts every denial.
    pub fn allow_all(&self) {
        self.levers().denials.clear();
    }

    /// The request log so far.
    pub fn requests(&self) -> RequestLog {
        self.levers().log.clone()
    }

    /// Empties the request log.
    pub fn reset_requests(&self) {
        self.levers().log.records.clear();
    }

    /// Changes the version `/version` reports (`1.27` … `1.33`).
    pub fn set_kube_version(&self, version: &str) {
        if let Some(m) = crate::scenario::parse_minor(version) {
            *self
                .shared
                .minor
                .write()
                .unwrap_or_else(PoisonError::into_inner) = m;
        }
    }

    /// Creates or replaces objects directly (no admission, status kept), as a scenario would.
    pub fn load(&self, objects: impl IntoIterator<Item = Value>) -> Result<(), Error> {
        let mut st = self
            .shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for o in objects {
            let kind = o["kind"].as_str().unwrap_or("").to_string();
            let name = util::name_of(&o).to_string();
            st.upsert(o).map_err(|message| Error::Object {
                kind,
                name,
                message,
            })?;
        }
        // As a scenario would: the objects were always there, so controllers catch up at once.
        st.controllers.loading = true;
        crate::controllers::reconcile(&mut st);
        st.controllers.loading = false;
        Ok(())
    }

    /// A stored object by `apiVersion`, `kind`, namespace ("" for cluster scope), name.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let st = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let rt = st.registry.by_kind(api_version, kind)?;
        st.get_obj(&rt.key(), namespace, name).cloned()
    }

    /// How many objects are stored in all.
    pub fn object_count(&self) -> usize {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .objects
            .len()
    }

    fn levers(&self) -> std::sync::MutexGuard<'_, Levers> {
        self.shared
            .levers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    let mut conns = JoinSet::new();
    // The emulated controllers' timed work (rollouts, Citadel's delays and resync); aborted with
    // the connections when the server stops.
    let ticker = shared.clone();
    conns.spawn(async move { crate::controllers::drive(&ticker.state).await });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Signals hyper to drop the connection (the "connection reset" fault).
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kube-sim injected a connection reset")
    }
}

impl std::error::Error for Reset {}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(code: u16, body: Vec<u8>, content_type: &str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

fn ok_json(code: u16, v: &Value) -> Response<Body> {
    json_response(
        code,
        serde_json::to_vec(v).expect("Value serialises"),
        "application/json",
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = ok_json(e.code, &e.body());
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters; empty segments (`?&force=true`) are skipped, as Go's url.ParseQuery does.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | ""))
    }
}

/// A parsed request target.
enum Route {
    Version,
    Health,
    Api,
    Apis,
    ApiGroup(String),
    ResourceList(String, String),
    OpenApiV3Root,
    OpenApiV3(String, String),
    OpenApiV2,
    Resource(Target),
    Unknown,
}

struct Target {
    rt: Arc<ResourceType>,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(st: &State, path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz", ..] => return Route::Health,
        ["api"] => return Route::Api,
        ["apis"] => return Route::Apis,
        ["apis", g] => return Route::ApiGroup((*g).to_string()),
        ["openapi", "v3"] => return Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => return Route::OpenApiV3(String::new(), (*v).to_string()),
        ["openapi", "v3", "apis", g, v] => {
            return Route::OpenApiV3((*g).to_string(), (*v).to_string());
        }
        ["openapi", "v2"] => return Route::OpenApiV2,
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    if rest.is_empty() {
        return Route::ResourceList(group.to_string(), version.to_string());
    }
    let lookup = |plural: &str| st.registry.lookup(group, version, plural);
    let target = |rt: Arc<ResourceType>, ns: Option<&str>, rest: &[&str]| {
        Route::Resource(Target {
            rt,
            version: version.to_string(),
            namespace: ns.map(str::to_string),
            name: rest.first().map(|s| (*s).to_string()),
            sub: rest.get(1).map(|s| (*s).to_string()),
        })
    };
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(rt) = lookup(plural).filter(|t| t.namespaced)
    {
        if tail.len() > 2 {
            return Route::Unknown;
        }
        return target(rt, Some(ns), tail);
    }
    match rest {
        [plural, tail @ ..] if tail.len() <= 2 => match lookup(plural) {
            Some(rt) => target(rt, None, tail),
            None => Route::Unknown,
        },
        _ => Route::Unknown,
    }
}

fn k8s_verb(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Reset> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let query = Query(parse_query(&raw_query));
    let watch = query.flag("watch") && query.get("watch").is_some();
    let (verb, target_info) = {
        let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
        match route(&st, &path) {
            Route::Resource(t) => {
                let has_name = t.name.is_some();
                (
                    k8s_verb(&method, has_name, watch),
                    Some((
                        t.rt.group.clone(),
                        t.rt.plural.clone(),
                        t.namespace.clone(),
                        t.name.clone(),
                        t.sub.clone(),
                        t.rt.namespaced,
                    )),
                )
            }
            _ => (
                match method.as_str() {
                    "GET" => "get",
                    "POST" => "create",
                    "PUT" => "update",
                    "PATCH" => "patch",
                    "DELETE" => "delete",
                    _ => "unknown",
                },
                None,
            ),
        }
    };
    let (latency, fault, denied) = {
        let mut l = shared.levers.lock().unwrap_or_else(PoisonError::into_inner);
        let fault = l.pick_fault(method.as_str(), verb, &path);
        let denied = target_info
            .as_ref()
            .is_some_and(|(g, plural, ns, _, sub, _)| {
                let resource = match sub {
                    Some(s) => format!("{plural}/{s}"),
                    None => plural.clone(),
                };
                l.denials
                    .iter()
                    .any(|d| d.matches(verb, g, &resource, ns.as_deref()))
            });
        (l.latency, fault, denied)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let log = |status: u16| {
        shared
            .levers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .log
            .records
            .push(RequestRecord {
                method: method.to_string(),
                verb: verb.to_string(),
                path: path.clone(),
                query: raw_query.clone(),
                status,
            });
    };
    match fault {
        Some(FaultKind::ConnectionReset) => {
            log(0);
            return Err(Reset);
        }
        Some(FaultKind::InternalError) => {
            log(500);
            return Ok(error_response(&ApiError::internal(
                "kube-sim injected an internal error",
            )));
        }
        Some(FaultKind::TooManyRequests {
            retry_after_seconds,
        }) => {
            log(429);
            return Ok(error_response(&ApiError::too_many_requests(
                retry_after_seconds,
            )));
        }
        None => {}
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let public = matches!(
        path.trim_end_matches('/'),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let authorized = match auth.as_deref() {
        Some(a) => a
            .strip_prefix("Bearer ")
            .is_some_and(|t| t.trim() == shared.token),
        None => public,
    };
    if !authorized {
        log(401);
        return Ok(error_response(&ApiError::unauthorized()));
    }
    if denied {
        let (g, plural, ns, name, sub, _) = target_info.expect("denied implies a resource target");
        let resource = match sub {
            Some(s) => format!("{plural}/{s}"),
            None => plural,
        };
        // Impersonation (`kubectl --as`): the token's user may act as anyone (the sim grants the
        // `impersonate` verb); RBAC then judges, and names, the impersonated user.
        let user = req
            .headers()
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(USER)
            .to_string();
        let e = ApiError::forbidden(
            &user,
            verb,
            &g,
            &resource,
            name.as_deref().unwrap_or(""),
            ns.as_deref(),
        );
        log(403);
        return Ok(error_response(&e));
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = if let Ok(b) = req.into_body().collect().await {
        b.to_bytes()
    } else {
        log(400);
        return Ok(error_response(&ApiError::bad_request(
            "cannot read the request body",
        )));
    };
    if watch && method == Method::GET {
        let resp = start_watch(&shared, &path, &query, &accept);
        log(resp.status().as_u16());
        return Ok(resp);
    }
    // kubectl's typed clients (create ns/sa/secret/token…) send protobuf; decode it to JSON.
    let (body, content_type) =
        if content_type.starts_with("application/vnd.kubernetes.protobuf") && !body.is_empty() {
            match crate::proto::decode(&body) {
                Ok(v) => (
                    Bytes::from(serde_json::to_vec(&v).expect("Value serialises")),
                    "application/json".to_string(),
                ),
                Err(e) => {
                    let mut err = ApiError::unsupported_media_type(&content_type);
                    err.message = e;
                    log(415);
                    return Ok(error_response(&err));
                }
            }
        } else {
            (body, content_type)
        };
    let resp = dispatch(
        &shared,
        &method,
        &path,
        &query,
        &accept,
        &content_type,
        &user_agent,
        &body,
    );
    log(resp.status().as_u16());
    Ok(resp)
}

fn write_opts(q: &Query, user_agent: &str) -> WriteOpts {
    let explicit = q.get("fieldManager").filter(|m| !m.is_empty());
    // The apiserver names an unnamed manager after the User-Agent's product token.
    let derived = user_agent.split('/').next().unwrap_or("").to_string();
    WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        manager: explicit.map_or(derived, str::to_string),
        manager_explicit: explicit.is_some(),
        force: q.flag("force") && q.get("force").is_some(),
        field_validation: match q.get("fieldValidation") {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        },
    }
}

fn list_opts(q: &Query) -> Result<ListOpts, ApiError> {
    Ok(ListOpts {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?,
        limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: q.get("continue").map(str::to_string),
    })
}

fn check_fields(
    st: &State,
    rt: &ResourceType,
    version: &str,
    lo: &ListOpts,
    q: &Query,
) -> Result<(), ApiError> {
    st.check_field_selector(
        rt,
        version,
        lo,
        q.get("labelSelector").unwrap_or(""),
        q.get("fieldSelector").unwrap_or(""),
    )
}

fn written(w: crate::store::Written) -> Response<Body> {
    let mut r = ok_json(w.code, &w.object);
    for warn in w.warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {}", json!(warn))) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    shared: &Shared,
    method: &Method,
    path: &str,
    q: &Query,
    accept: &str,
    content_type: &str,
    user_agent: &str,
    body: &[u8],
) -> Response<Body> {
    let minor = shared
        .minor
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let route = {
        let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
        route(&st, path)
    };
    let get_only = |r: Response<Body>| {
        if *method == Method::GET {
            r
        } else {
            error_response(&ApiError::method_not_allowed(method.as_str(), path))
        }
    };
    match route {
        Route::Version => get_only(ok_json(200, &discovery::version(&minor))),
        Route::Health => get_only(json_response(
            200,
            b"ok".to_vec(),
            "text/plain; charset=utf-8",
        )),
        Route::Api => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match Aggregated::from_accept(accept) {
                Some(f) => json_response(
                    200,
                    discovery::aggregated(&st.registry, true, f)
                        .to_string()
                        .into_bytes(),
                    f.content_type(),
                ),
                None => ok_json(200, &discovery::api_versions(&shared.address)),
            })
        }
        Route::Apis => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match Aggregated::from_accept(accept) {
                Some(f) => json_response(
                    200,
                    discovery::aggregated(&st.registry, false, f)
                        .to_string()
                        .into_bytes(),
                    f.content_type(),
                ),
                None => ok_json(200, &discovery::api_group_list(&st.registry)),
            })
        }
        Route::ApiGroup(g) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match discovery::api_group(&st.registry, &g) {
                Some(v) => ok_json(200, &v),
                None => error_response(&ApiError::path_not_found()),
            })
        }
        Route::ResourceList(g, v) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match discovery::api_resource_list(&st.registry, &g, &v) {
                Some(v) => ok_json(200, &v),
                None => error_response(&ApiError::path_not_found()),
            })
        }
        Route::OpenApiV3Root => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(ok_json(200, &discovery::openapi_root(&st.registry, &minor)))
        }
        Route::OpenApiV3(g, v) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match discovery::openapi_gv(&st.registry, &g, &v, &minor) {
                Some(d) => ok_json(200, &d),
                None => error_response(&ApiError::path_not_found()),
            })
        }
        Route::OpenApiV2 => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(json_response(
                200,
                discovery::openapi_v2_protobuf(&st.registry, &minor),
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            ))
        }
        Route::Unknown => error_response(&ApiError::path_not_found()),
        Route::Resource(t) => {
            match resource(
                shared,
                method,
                &t,
                q,
                accept,
                content_type,
                user_agent,
                body,
            ) {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Shared,
    method: &Method,
    t: &Target,
    q: &Query,
    accept: &str,
    content_type: &str,
    user_agent: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let rt = &t.rt;
    if rt.namespaced != t.namespace.is_some() && t.name.is_some() {
        // Namespaced objects need a namespace in the path; cluster objects must not have one.
        return Err(ApiError::path_not_found());
    }
    if !rt.namespaced && t.namespace.is_some() {
        return Err(ApiError::path_not_found());
    }
    let ns = t.namespace.as_deref().unwrap_or("");
    if rt.group == "authorization.k8s.io" && rt.plural == "selfsubjectaccessreviews" {
        return match (method.as_str(), t.name.is_none()) {
            ("POST", true) => access_review(shared, body),
            (m, _) => Err(ApiError::method_not_allowed(m, &rt.plural)),
        };
    }
    let opts = write_opts(q, user_agent);
    let sub = t.sub.as_deref();
    match sub {
        None => {}
        Some("status")
            if rt.status_subresource && (*method == Method::POST || *method == Method::DELETE) =>
        {
            return Err(ApiError::method_not_allowed(
                method.as_str(),
                &format!("{}/status", rt.plural),
            ));
        }
        Some("token")
            if rt.group.is_empty() && rt.plural == "serviceaccounts" && *method == Method::POST =>
        {
            let name = t.name.as_deref().unwrap_or("");
            return token_request(shared, ns, name, body);
        }
        Some("scale") if rt.group == "apps" && rt.plural == "deployments" => {
            let name = t.name.as_deref().unwrap_or("");
            return scale(
                shared,
                method,
                rt,
                &t.version,
                ns,
                name,
                content_type,
                body,
                &opts,
            );
        }
        Some(_) => return Err(ApiError::path_not_found()),
    }
    match (method.as_str(), t.name.as_deref()) {
        ("GET", Some(name)) if sub.is_none() && table::wants_table(accept) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            let obj = st
                .get_obj(&rt.key(), ns, name)
                .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
            let meta =
                json!({"resourceVersion": util::str_at(obj, &["metadata", "resourceVersion"])});
            Ok(table_response(&st, rt, &t.version, &[obj], &meta, q))
        }
        ("GET", Some(name)) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            Ok(ok_json(200, &st.get(rt, &t.version, ns, name)?))
        }
        ("GET", None) if table::wants_table(accept) => {
            let lo = list_opts(q)?;
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            check_fields(&st, rt, &t.version, &lo, q)?;
            let (items, meta) = st.list_page(rt, t.namespace.as_deref(), &lo)?;
            Ok(table_response(&st, rt, &t.version, &items, &meta, q))
        }
        ("GET", None) => {
            let lo = list_opts(q)?;
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            check_fields(&st, rt, &t.version, &lo, q)?;
            let body = st.list(rt, &t.version, t.namespace.as_deref(), &lo)?;
            Ok(json_response(200, body, "application/json"))
        }
        ("POST", None) => {
            let obj = parse_body(body)?;
            let mut st = shared.state.write().unwrap_or_else(PoisonError::into_inner);
            Ok(written(st.create(rt, &t.version, ns, obj, &opts)?))
        }
        ("PUT", Some(name)) => {
            let obj = parse_body(body)?;
            let mut st = shared.state.write().unwrap_or_else(PoisonError::into_inner);
            Ok(written(
                st.update(rt, &t.version, ns, name, sub, obj, &opts)?,
            ))
        }
        ("PATCH", Some(name)) => {
            let mut st = shared.state.write().unwrap_or_else(PoisonError::into_inner);
            Ok(written(st.patch(
                rt,
                &t.version,
                ns,
                name,
                sub,
                content_type,
                body,
                &opts,
            )?))
        }
        ("DELETE", Some(name)) => {
            let opts_body = if body.is_empty() {
                None
            } else {
                Some(parse_body(body)?)
            };
            // DeleteOptions may carry dryRun in the body (kube-rs, kubectl) as well as the query.
            let body_dry = opts_body
                .as_ref()
                .and_then(|b| b.get("dryRun"))
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|v| v == "All"));
            let opts = WriteOpts {
                dry_run: opts.dry_run || body_dry,
                ..opts
            };
            let mut st = shared.state.write().unwrap_or_else(PoisonError::into_inner);
            Ok(written(st.delete(
                rt,
                &t.version,
                ns,
                name,
                opts_body.as_ref(),
                &opts,
            )?))
        }
        ("DELETE", None) => {
            let lo = list_opts(q)?;
            let body_dry = (!body.is_empty())
                .then(|| parse_body(body))
                .transpose()?
                .and_then(|b| b.get("dryRun").cloned())
                .and_then(|d| d.as_array().cloned())
                .is_some_and(|d| d.iter().any(|v| v == "All"));
            let opts = WriteOpts {
                dry_run: opts.dry_run || body_dry,
                ..opts
            };
            let mut st = shared.state.write().unwrap_or_else(PoisonError::into_inner);
            check_fields(&st, rt, &t.version, &lo, q)?;
            let body = st.delete_collection(rt, &t.version, t.namespace.as_deref(), &lo, &opts)?;
            Ok(json_response(200, body, "application/json"))
        }
        (m, _) => Err(ApiError::method_not_allowed(m, &rt.plural)),
    }
}

fn table_response(
    st: &State,
    rt: &ResourceType,
    version: &str,
    items: &[&Value],
    meta: &Value,
    q: &Query,
) -> Response<Body> {
    let crd = if rt.builtin {
        None
    } else {
        st.get_obj(
            "apiextensions.k8s.io/customresourcedefinitions",
            "",
            &format!("{}.{}", rt.plural, rt.group),
        )
    };
    let columns = table::crd_printer_columns(crd, version);
    let t = table::table(
        rt,
        version,
        items,
        meta,
        columns.as_ref(),
        table::Include::parse(q.get("includeObject")),
        util::now_unix(),
    );
    json_response(
        200,
        serde_json::to_vec(&t).expect("Value serialises"),
        table::CONTENT_TYPE,
    )
}

/// The `autoscaling/v1` Scale view of a Deployment.
fn scale_of(deployment: &Value) -> Value {
    let selector: Vec<String> = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let meta = deployment.get("metadata").cloned().unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": deployment.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": deployment.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector.join(","),
        },
    })
}

/// GET/PUT/PATCH of `deployments/<name>/scale` (what `kubectl scale` uses).
#[allow(clippy::too_many_arguments)]
fn scale(
    shared: &Shared,
    method: &Method,
    rt: &ResourceType,
    version: &str,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
    opts: &WriteOpts,
) -> Result<Response<Body>, ApiError> {
    let mut st = shared.state.write().unwrap_or_else(PoisonError::into_inner);
    let current = st.get(rt, version, ns, name)?;
    let mut wanted = scale_of(&current);
    match method.as_str() {
        "GET" => return Ok(ok_json(200, &wanted)),
        "PUT" => {
            let b = parse_body(body)?;
            if let Some(rv) = b
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && Some(rv) != util::str_at(&current, &["metadata", "resourceVersion"])
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    ApiError::STALE,
                ));
            }
            wanted = b;
        }
        "PATCH" => {
            let p = parse_body(body)?;
            let ct = content_type.split(';').next().unwrap_or("").trim();
            let r = match ct {
                "application/json-patch+json" => crate::patch::json_patch(&mut wanted, &p),
                "application/merge-patch+json" => {
                    crate::patch::merge_patch(&mut wanted, &p);
                    Ok(())
                }
                "application/strategic-merge-patch+json" => {
                    crate::patch::strategic_merge_patch(&mut wanted, &p)
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            r.map_err(ApiError::bad_request)?;
        }
        m => return Err(ApiError::method_not_allowed(m, "deployments/scale")),
    }
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                &[(
                    "spec.replicas".into(),
                    "FieldValueInvalid".into(),
                    "Invalid value: must be greater than or equal to 0".into(),
                )],
            )
        })?;
    let patch =
        serde_json::to_vec(&json!({"spec": {"replicas": replicas}})).expect("Value serialises");
    let w = st.patch(
        rt,
        version,
        ns,
        name,
        None,
        "application/merge-patch+json",
        &patch,
        opts,
    )?;
    Ok(ok_json(200, &scale_of(&w.object)))
}

/// `kubectl auth can-i`: allowed unless a denial lever covers the attributes.
fn access_review(shared: &Shared, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let mut review = parse_body(body)?;
    let allowed = match review.pointer("/spec/resourceAttributes") {
        Some(a) => {
            let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("");
            let resource = if s("subresource").is_empty() {
                s("resource").to_string()
            } else {
                format!("{}/{}", s("resource"), s("subresource"))
            };
            let ns = Some(s("namespace")).filter(|n| !n.is_empty());
            let levers = shared.levers.lock().unwrap_or_else(PoisonError::into_inner);
            !levers
                .denials
                .iter()
                .any(|d| d.matches(s("verb"), s("group"), &resource, ns))
        }
        // Non-resource URLs (`/healthz`…) are never denied.
        None => true,
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"kube-sim\" of ClusterRole \"cluster-admin\" to User \"kube-sim\""})
    } else {
        json!({"allowed": false})
    };
    Ok(ok_json(201, &review))
}

/// The API server's default token audience.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

fn token_request(
    shared: &Shared,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let req = if body.is_empty() {
        json!({})
    } else {
        parse_body(body)?
    };
    let uid = {
        let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
        let sa = st
            .get_obj("/serviceaccounts", ns, name)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
        util::str_at(sa, &["metadata", "uid"])
            .unwrap_or("")
            .to_string()
    };
    let mut audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(DEFAULT_AUDIENCE.to_string());
    }
    let exp = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if exp < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            &[(
                "spec.expirationSeconds".into(),
                "FieldValueInvalid".into(),
                format!("Invalid value: {exp}: may not specify a duration less than 10 minutes"),
            )],
        ));
    }
    if exp > 1 << 32 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            &[(
                "spec.expirationSeconds".into(),
                "FieldValueTooLong".into(),
                format!(
                    "Invalid value: {exp}: may not specify a duration larger than 2^32 seconds"
                ),
            )],
        ));
    }
    let now = util::now_unix();
    let token = shared.signer.sign(ns, name, &uid, &audiences, exp, now);
    let resp = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": exp, "boundObjectRef": req.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null)},
        "status": {"token": token, "expirationTimestamp": util::rfc3339(now + exp)},
    });
    Ok(ok_json(201, &resp))
}

/// A response body fed by a channel (watch streams).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn start_watch(shared: &Arc<Shared>, path: &str, q: &Query, accept: &str) -> Response<Body> {
    let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
    let Route::Resource(t) = route(&st, path) else {
        return error_response(&ApiError::path_not_found());
    };
    let lo = match list_opts(q)
        .and_then(|lo| check_fields(&st, &t.rt, &t.version, &lo, q).map(|()| lo))
    {
        Ok(l) => l,
        Err(e) => return error_response(&e),
    };
    let key = t.rt.key();
    let ns = t.namespace.clone();
    let single = t.name.clone();
    let rv_param = q.get("resourceVersion").unwrap_or("").to_string();
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let api_version = t.rt.api_version(&t.version);
    let kind = t.rt.kind.clone();
    let wanted = move |o: &Value| {
        ns.as_deref().is_none_or(|n| util::namespace_of(o) == n)
            && single.as_deref().is_none_or(|n| util::name_of(o) == n)
            && lo.labels.matches(o)
            && lo.fields.matches(o)
    };
    // `kubectl get -w` asks for Table events: one row each, column definitions on the first only.
    let as_table = table::wants_table(accept);
    let printer_columns = if t.rt.builtin {
        None
    } else {
        table::crd_printer_columns(
            st.get_obj(
                "apiextensions.k8s.io/customresourcedefinitions",
                "",
                &format!("{}.{}", t.rt.plural, t.rt.group),
            ),
            &t.version,
        )
    };
    let include = table::Include::parse(q.get("includeObject"));
    let sent_columns = std::sync::atomic::AtomicBool::new(false);
    let frame = {
        let api_version = api_version.clone();
        let kind = kind.clone();
        let rt = t.rt.clone();
        let version = t.version.clone();
        move |ty: &str, o: &Value| {
            let object = if as_table {
                let meta =
                    json!({"resourceVersion": util::str_at(o, &["metadata", "resourceVersion"])});
                let mut tb = table::table(
                    &rt,
                    &version,
                    &[o],
                    &meta,
                    printer_columns.as_ref(),
                    include,
                    util::now_unix(),
                );
                if sent_columns.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tb["columnDefinitions"] = json!([]);
                }
                tb
            } else {
                let mut o = o.clone();
                o["apiVersion"] = json!(api_version);
                o["kind"] = json!(kind);
                o
            };
            let mut line = serde_json::to_vec(&json!({"type": ty, "object": object}))
                .expect("Value serialises");
            line.push(b'\n');
            Bytes::from(line)
        }
    };
    let mut initial = Vec::new();
    // resourceVersion "" or "0": start with the current objects as ADDED events, as the apiserver does.
    if rv_param.is_empty() || rv_param == "0" {
        for (_, o) in st.iter_resource(&key, None) {
            if wanted(o) {
                initial.push(frame("ADDED", o));
            }
        }
    }
    let since: u64 = rv_param.parse().unwrap_or(0);
    let mut rx = st.events.subscribe();
    drop(st);
    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                // The client went away: stop now rather than at the next event.
                () = tx.closed() => return,
                ev = rx.recv() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let gone = ApiError { code: 410, reason: "Expired", message: "too old resource version".into(), details: None, retry_after: None };
                            let _ = tx.send(frame_error(&gone)).await;
                            return;
                        }
                        Err(_) => return,
                    };
                    let rv: u64 = util::str_at(&ev.object, &["metadata", "resourceVersion"]).and_then(|r| r.parse().ok()).unwrap_or(0);
                    if ev.resource != key || rv <= since || !wanted(&ev.object) {
                        continue;
                    }
                    if tx.send(frame(ev.kind, &ev.object)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut r = Response::new(ChannelBody(body_rx).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn frame_error(e: &ApiError) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.body()}))
        .expect("Value serialises");
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_skips_empty_segments() {
        let q = Query(parse_query(
            "&force=true&fieldManager=meshvm&labelSelector=app%3Dx%2Cy+in+%28a%29",
        ));
        assert!(q.flag("force"));
        assert_eq!(q.get("fieldManager"), Some("meshvm"));
        assert_eq!(q.get("labelSelector"), Some("app=x,y in (a)"));
    }

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        let st = State::new(crate::cidr::Cidr::default());
        let Route::Resource(t) = route(&st, "/api/v1/namespaces/ns1/secrets/s") else {
            panic!("not a resource")
        };
        assert_eq!(
            (
                t.rt.plural.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref()
            ),
            ("secrets", Some("ns1"), Some("s"))
        );
        let Route::Resource(t) = route(&st, "/api/v1/namespaces/ns1/status") else {
            panic!("not a resource")
        };
        assert_eq!(
            (t.rt.plural.as_str(), t.name.as_deref(), t.sub.as_deref()),
            ("namespaces", Some("ns1"), Some("status"))
        );
        let Route::Resource(t) = route(&st, "/api/v1/secrets") else {
            panic!("not a resource")
        };
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(matches!(
            route(&st, "/apis/apps/v1"),
            Route::ResourceList(..)
        ));
        assert!(matches!(route(&st, "/apis/nope/v1/things"), Route::Unknown));
    }
}
