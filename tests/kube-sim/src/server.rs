//! The HTTPS server: TLS, authentication, routing, levers, and the `Server` handle tests hold.

use std::convert::Infallible;
use std::fmt::Write as _;
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
use crate::compression;
use crate::discovery::{self, Aggregated};
use crate::levers::{ContinueExpiry, Denial, Fault, FaultKind, Levers, RequestLog, RequestRecord};
use crate::rbac::UserInfo;
use crate::registry::ResourceType;
use crate::scenario::{Error, Scenario};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{FieldValidation, ListOpts, State, WriteOpts};
use crate::table;
use crate::util;
use crate::version::{ENDPOINTS_KEY, KubeVersion, RuntimeConfig, VersionError};

type Body = BoxBody<Bytes, Infallible>;

/// The user every valid token authenticates as (403 messages name it).
pub const USER: &str = "kube-sim";

struct Shared {
    state: RwLock<State>,
    levers: Mutex<Levers>,
    token: String,
    signer: TokenSigner,
    address: String,
    /// Where the kubeconfig lives, its server URL and CA (rewritten when users are added).
    kubeconfig: PathBuf,
    url: String,
    ca_pem: String,
}

/// Where and how to serve, beyond the scenario.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Where to write the kubeconfig (None: a private temporary directory, removed on drop).
    pub kubeconfig: Option<PathBuf>,
    /// A file each request is appended to as one JSON line (see [`RequestRecord::json_line`]).
    pub request_log: Option<PathBuf>,
}

fn open_request_log(path: &Path) -> Result<std::fs::File, Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            Error::Start(format!(
                "cannot open the request log {}: {e}; give a writable file path",
                path.display()
            ))
        })
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

/// The kubeconfig: cluster, user and context `kube-sim` (current), plus a user and a context
/// named after each extra user.
fn kubeconfig_yaml(
    url: &str,
    ca_pem: &str,
    token: &str,
    extra: &std::collections::BTreeMap<String, String>,
) -> String {
    let ca = crate::store::b64(ca_pem.as_bytes());
    let mut users = format!("- name: kube-sim\n  user:\n    token: {token}\n");
    let mut contexts = String::from(
        "- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\n",
    );
    for (name, t) in extra {
        let n = json!(name);
        let _ = write!(users, "- name: {n}\n  user:\n    token: {t}\n");
        let _ = write!(
            contexts,
            "- name: {n}\n  context:\n    cluster: kube-sim\n    user: {n}\n    namespace: default\n"
        );
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n{users}contexts:\n{contexts}current-context: kube-sim\npreferences: {{}}\n"
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
        for u in &scenario.levers.users {
            if u == USER {
                return Err(Error::Start(format!(
                    "extra user {u:?} is the kubeconfig's own user: give another name"
                )));
            }
            levers.users.tokens.insert(u.clone(), random_token());
        }
        levers
            .users
            .impersonators
            .extend(scenario.levers.impersonators.iter().cloned());
        levers.response_compression = !scenario.levers.response_compression_off;
        if let Some(p) = &opts.request_log {
            levers.log_file = Some(open_request_log(p)?);
        }
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
        write_private(
            &kubeconfig,
            &kubeconfig_yaml(&url, &tls.ca_pem, &token, &levers.users.tokens),
        )
        .map_err(|e| {
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
            signer: TokenSigner::new(),
            address: addr.to_string(),
            kubeconfig: kubeconfig.clone(),
            url: url.clone(),
            ca_pem: tls.ca_pem.clone(),
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

    /// Delays every request of `verb` (Kubernetes verb, or HTTP method in upper case) under the
    /// path prefix `path` by `latency` more, before it is handled.
    pub fn slow_down(&self, verb: &str, path: &str, latency: Duration) {
        self.levers()
            .slow
            .push((verb.to_owned(), path.to_owned(), latency));
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

    /// Empties the request log (in memory; the log file keeps its lines).
    pub fn reset_requests(&self) {
        self.levers().log.records.clear();
    }

    /// Appends every request from now on to `path` as one JSON line (None: stop).
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn set_request_log(&self, path: Option<&Path>) -> Result<(), Error> {
        let file = path.map(open_request_log).transpose()?;
        self.levers().log_file = file;
        Ok(())
    }

    /// Changes the Kubernetes version served (`1.13` … `1.35`): what `/version` reports, what
    /// is served and how writes behave from now on (stored objects stay as they are).
    pub fn set_kube_version(&self, version: &str) -> Result<(), VersionError> {
        let v: KubeVersion = version.parse()?;
        self.state_mut().version = v;
        Ok(())
    }

    /// The Kubernetes version served.
    pub fn kube_version(&self) -> KubeVersion {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    /// `false` turns the `APIResponseCompression` feature gate off from now on (as
    /// `--feature-gates=APIResponseCompression=false`); `true` puts it back at the version's
    /// default (on from 1.16). See [`crate::compression`].
    pub fn set_response_compression(&self, enabled: bool) {
        self.levers().response_compression = enabled;
    }

    /// Turns on APIs beyond the version's defaults (as `--runtime-config` would).
    pub fn set_runtime_config(&self, rc: RuntimeConfig) {
        self.state_mut().runtime = rc;
    }

    /// Makes `continue` tokens expire from now on (410 `Expired`); `ContinueExpiry::Never` undoes it.
    pub fn expire_continue_tokens(&self, expiry: ContinueExpiry) {
        self.state_mut().continue_expiry = expiry;
    }

    /// Keeps namespaces deleted from now on `Terminating` for `delay` (zero: deleted at once).
    pub fn set_namespace_finalize_delay(&self, delay: Duration) {
        self.state_mut().namespace_finalize_delay = delay;
    }

    /// Adds a user with its own bearer token (returned; the kubeconfig gains a user and context
    /// of that name). The user is authorized by the sim's RBAC objects (see [`crate::rbac`]).
    /// Adding an existing user returns its token.
    ///
    /// # Errors
    /// When `name` is the kubeconfig's own user, or the kubeconfig cannot be rewritten.
    pub fn add_user(&self, name: &str) -> Result<String, Error> {
        if name == USER || name.is_empty() {
            return Err(Error::Start(format!(
                "extra user {name:?}: give a non-empty name other than {USER:?}"
            )));
        }
        let tokens = {
            let mut l = self.levers();
            l.users
                .tokens
                .entry(name.to_string())
                .or_insert_with(random_token);
            l.users.tokens.clone()
        };
        write_private(
            &self.shared.kubeconfig,
            &kubeconfig_yaml(
                &self.shared.url,
                &self.shared.ca_pem,
                &self.shared.token,
                &tokens,
            ),
        )
        .map_err(|e| {
            Error::Start(format!(
                "cannot rewrite kubeconfig {}: {e}",
                self.shared.kubeconfig.display()
            ))
        })?;
        Ok(tokens[name].clone())
    }

    /// The bearer token of an extra user.
    pub fn user_token(&self, name: &str) -> Option<String> {
        self.levers().users.tokens.get(name).cloned()
    }

    /// Lets an extra user impersonate (the `impersonate` verb on users, groups, service
    /// accounts), or takes it away.
    pub fn set_impersonation(&self, user: &str, allowed: bool) {
        let mut l = self.levers();
        if allowed {
            l.users.impersonators.insert(user.to_string());
        } else {
            l.users.impersonators.remove(user);
        }
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
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

    /// Every stored object of `apiVersion` `kind`, in all namespaces.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let st = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(rt) = st.registry.by_kind(api_version, kind) else {
            return Vec::new();
        };
        st.iter_resource(&rt.key(), None)
            .map(|(_, v)| v.clone())
            .collect()
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

/// The body of a response whose size is exact: every answer but a watch stream is one `Full`
/// frame, ready at once (None for anything else).
fn ready_body(body: &mut Body) -> Option<Bytes> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match hyper::body::Body::poll_frame(Pin::new(body), &mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
        Poll::Ready(None) => Some(Bytes::new()),
        Poll::Ready(Some(Err(never))) => match never {},
        Poll::Pending => None,
    }
}

/// Puts a response on the wire as the apiserver would (see [`crate::compression`]): gzips it
/// when its writer, the request's `Accept-Encoding`, the version, the gate and its size say
/// so, with the headers the writer sets. Returns the response, the body's size before and
/// after (None for streams) and the encoding used.
fn encode(
    mut resp: Response<Body>,
    writer: compression::Writer,
    accept_encoding: Option<&str>,
    version: KubeVersion,
    gate: bool,
) -> (
    Response<Body>,
    Option<u64>,
    Option<u64>,
    compression::Encoding,
) {
    let Some(len) = hyper::body::Body::size_hint(resp.body()).exact() else {
        return (resp, None, None, compression::Encoding::Identity);
    };
    // gziphandler adds `Vary: Accept-Encoding` to every answer it wraps, compressed or not
    // (NYTimes/gziphandler@v1.1.1 gzip.go:324; @56545f4a5d46 gzip.go:243).
    if writer == compression::Writer::OpenApiV2 {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let encoding = compression::choose(
        writer,
        accept_encoding,
        version,
        gate,
        usize::try_from(len).unwrap_or(usize::MAX),
    );
    let compression::Encoding::Gzip { level } = encoding else {
        return (resp, Some(len), Some(len), encoding);
    };
    let Some(body) = ready_body(resp.body_mut()) else {
        return (resp, Some(len), Some(len), compression::Encoding::Identity);
    };
    let zipped = compression::gzip(&body, level);
    let wire = zipped.len() as u64;
    *resp.body_mut() = full(zipped);
    let headers = resp.headers_mut();
    // `header.Set("Content-Encoding", "gzip")`, and the response writer's
    // `header.Add("Vary", "Accept-Encoding")` (apiserver@kubernetes-1.16.0
    // pkg/endpoints/handlers/responsewriters/writers.go:190-191; 1.33.0 :263-264); gziphandler
    // sets the same Content-Encoding (v1.1.1 gzip.go:152) and has added its Vary above.
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    if writer == compression::Writer::Negotiated {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    (resp, Some(len), Some(wire), encoding)
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
    let surface = st.surface();
    let lookup = |plural: &str| surface.lookup(group, version, plural);
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

/// One thing a request asks to impersonate (`buildImpersonationRequests`,
/// apiserver@kubernetes-1.33.0 pkg/endpoints/filters/impersonation.go:215-273).
struct Impersonation {
    /// Go's `ObjectReference.Kind`: `User`, `ServiceAccount`, `Group`, `UserExtra`, `UID`.
    kind: &'static str,
    namespace: String,
    name: String,
    /// `authentication.k8s.io/v1` for extras and UIDs, as the apiserver records it.
    api_version: &'static str,
    /// The extra's key.
    field_path: String,
}

impl Impersonation {
    /// The (group, resource, subresource) the `impersonate` verb is checked on
    /// (impersonation.go:85-110).
    fn resource(&self) -> (&'static str, &'static str, String) {
        match self.kind {
            "ServiceAccount" => ("", "serviceaccounts", String::new()),
            "User" => ("", "users", String::new()),
            "Group" => ("", "groups", String::new()),
            "UserExtra" => (
                "authentication.k8s.io",
                "userextras",
                self.field_path.clone(),
            ),
            _ => ("authentication.k8s.io", "uids", String::new()),
        }
    }

    /// Go's `%v` of the `ObjectReference` (`{Kind Namespace Name UID APIVersion ResourceVersion FieldPath}`).
    fn go_value(&self) -> String {
        format!(
            "{{{} {} {}  {}  {}}}",
            self.kind, self.namespace, self.name, self.api_version, self.field_path
        )
    }
}

fn impersonation_requests(headers: &http::HeaderMap) -> (Vec<Impersonation>, bool) {
    let get_all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let mut out = Vec::new();
    let user = get_all("impersonate-user")
        .into_iter()
        .next()
        .unwrap_or_default();
    let has_user = !user.is_empty();
    if has_user {
        // `serviceaccount.SplitUsername`: system:serviceaccount:<ns>:<name>.
        let sa = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains(':'));
        out.push(match sa {
            Some((ns, n)) => Impersonation {
                kind: "ServiceAccount",
                namespace: ns.to_string(),
                name: n.to_string(),
                api_version: "",
                field_path: String::new(),
            },
            None => Impersonation {
                kind: "User",
                namespace: String::new(),
                name: user,
                api_version: "",
                field_path: String::new(),
            },
        });
    }
    for g in get_all("impersonate-group") {
        out.push(Impersonation {
            kind: "Group",
            namespace: String::new(),
            name: g,
            api_version: "",
            field_path: String::new(),
        });
    }
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = value.to_str()
        {
            out.push(Impersonation {
                kind: "UserExtra",
                namespace: String::new(),
                name: v.to_string(),
                api_version: "authentication.k8s.io/v1",
                field_path: percent_decode(key),
            });
        }
    }
    if let Some(uid) = get_all("impersonate-uid")
        .into_iter()
        .next()
        .filter(|u| !u.is_empty())
    {
        out.push(Impersonation {
            kind: "UID",
            namespace: String::new(),
            name: uid,
            api_version: "authentication.k8s.io/v1",
            field_path: String::new(),
        });
    }
    (out, has_user)
}

/// Applies the impersonation headers for `requestor`: the user the request then acts as, or
/// the response refusing it (403 without the `impersonate` permission, as the impersonation
/// filter answers; 500 for groups/extras/UID without a user, apiserver@kubernetes-1.33.0
/// pkg/endpoints/filters/impersonation.go:46-48,269-271). The `impersonate` verb is granted to
/// `system:masters` (the admin), to the impersonator lever's users, and by RBAC rules (verb
/// `impersonate` on `users`, `groups`, `serviceaccounts`, `userextras/<key>`, `uids` with the
/// impersonated name), unless a denial lever takes it away. The impersonated user's groups are
/// the filter's: the `Impersonate-Group`s given, else a service account's
/// `system:serviceaccounts[:<ns>]`; plus `system:authenticated` unless
/// `system:(un)authenticated` was given, or `system:unauthenticated` for `system:anonymous`
/// (impersonation.go:61-156).
fn impersonate(
    shared: &Shared,
    headers: &http::HeaderMap,
    requestor: &UserInfo,
    request_uri: &str,
) -> Result<UserInfo, Response<Body>> {
    let (requests, has_user) = impersonation_requests(headers);
    if requests.is_empty() {
        return Ok(requestor.clone());
    }
    if !has_user {
        let list: Vec<String> = requests.iter().map(Impersonation::go_value).collect();
        // `responsewriters.InternalError`: http.Error, plain text.
        let text = format!(
            "Internal Server Error: {request_uri:?}: requested [{}] without impersonating a user\n",
            list.join(" ")
        );
        let mut r = Response::new(full(text));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Err(r);
    }
    let groups_specified = requests.iter().any(|r| r.kind == "Group");
    let levers = shared.levers.lock().unwrap_or_else(PoisonError::into_inner);
    let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
    let granted = requestor.privileged() || levers.users.impersonators.contains(&requestor.name);
    let mut name = String::new();
    let mut groups: Vec<String> = Vec::new();
    for r in &requests {
        let (group, resource, sub) = r.resource();
        let full_resource = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        let ns = (!r.namespace.is_empty()).then_some(r.namespace.as_str());
        let attrs = crate::rbac::Attributes::resource(
            "impersonate",
            group,
            resource,
            &sub,
            &r.namespace,
            &r.name,
        );
        let decision = if granted {
            crate::rbac::Decision::Allow(String::new())
        } else {
            crate::rbac::authorize(&st, requestor, &attrs)
        };
        if levers.impersonation_denied(&full_resource, group, ns) || !decision.allowed() {
            // `responsewriters.Forbidden` → `forbiddenMessage` (apiserver@kubernetes-1.33.0
            // pkg/endpoints/handlers/responsewriters/errors.go:36-77): the acting user, verb
            // `impersonate`, the impersonated resource and name.
            let reason = match decision {
                crate::rbac::Decision::Deny(r) => r,
                crate::rbac::Decision::Allow(_) => String::new(),
            };
            return Err(error_response(&ApiError::forbidden_attrs(
                &requestor.name,
                &attrs,
                &reason,
            )));
        }
        match r.kind {
            "User" => name.clone_from(&r.name),
            "ServiceAccount" => {
                name = format!("system:serviceaccount:{}:{}", r.namespace, r.name);
                if !groups_specified {
                    groups = vec![
                        "system:serviceaccounts".to_string(),
                        format!("system:serviceaccounts:{}", r.namespace),
                    ];
                }
            }
            "Group" => groups.push(r.name.clone()),
            _ => {}
        }
    }
    if name == crate::rbac::ANONYMOUS {
        if !groups.iter().any(|g| g == crate::rbac::UNAUTHENTICATED) {
            groups.push(crate::rbac::UNAUTHENTICATED.to_string());
        }
    } else if !groups
        .iter()
        .any(|g| g == crate::rbac::AUTHENTICATED || g == crate::rbac::UNAUTHENTICATED)
    {
        groups.push(crate::rbac::AUTHENTICATED.to_string());
    }
    Ok(UserInfo { name, groups })
}

/// Finishes namespace terminations that are due.
fn finalize_due(shared: &Shared) {
    let due = {
        let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
        st.next_finalization()
            .is_some_and(|at| at <= std::time::Instant::now())
    };
    if due {
        shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .finalize_namespaces(std::time::Instant::now());
    }
}

/// After a DELETE that left a namespace Terminating: finish it when its delay is up.
fn schedule_finalization(shared: &Arc<Shared>) {
    let next = shared
        .state
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .next_finalization();
    if let Some(at) = next {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            finalize_due(&shared);
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Reset> {
    let arrived = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let request_uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |pq| pq.as_str().to_string());
    let query = Query(parse_query(&raw_query));
    let watch = query.flag("watch") && query.get("watch").is_some();
    let watch_stream = watch && method == Method::GET;
    // Go's `req.Header.Get("Accept-Encoding")`: the first header of that name.
    let accept_encoding = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    finalize_due(&shared);
    let (verb, target_info, endpoints) = {
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
                    t.rt.key() == ENDPOINTS_KEY && st.version.endpoints_deprecated(),
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
                false,
            ),
        }
    };
    let (latency, fault) = {
        let mut l = shared.levers.lock().unwrap_or_else(PoisonError::into_inner);
        (
            l.latency_of(method.as_str(), verb, &path),
            l.pick_fault(method.as_str(), verb, &path),
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // Encodes the response as the apiserver would (gzip, see `crate::compression`), logs it
    // (its status, body sizes, encoding and the acting user) and hands it back.
    let log = |resp: Response<Body>, user: &str| {
        let writer = compression::Writer::of(&path, watch_stream, resp.status().as_u16());
        let version = shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version;
        let gate = version.response_compression()
            && shared
                .levers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .response_compression;
        let (resp, bytes, wire_bytes, encoding) =
            encode(resp, writer, accept_encoding.as_deref(), version, gate);
        shared
            .levers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(RequestRecord {
                method: method.to_string(),
                verb: verb.to_string(),
                path: path.clone(),
                query: raw_query.clone(),
                status: resp.status().as_u16(),
                user: user.to_string(),
                bytes,
                wire_bytes,
                encoding: encoding.name().to_string(),
                accept: accept.clone(),
                accept_encoding: accept_encoding.clone().unwrap_or_default(),
                arrived,
                answered: std::time::Instant::now(),
            });
        resp
    };
    match fault {
        Some(FaultKind::ConnectionReset) => {
            shared
                .levers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(RequestRecord {
                    method: method.to_string(),
                    verb: verb.to_string(),
                    path: path.clone(),
                    query: raw_query.clone(),
                    status: 0,
                    user: String::new(),
                    bytes: None,
                    wire_bytes: None,
                    encoding: String::new(),
                    accept: accept.clone(),
                    accept_encoding: accept_encoding.clone().unwrap_or_default(),
                    arrived,
                    answered: std::time::Instant::now(),
                });
            return Err(Reset);
        }
        Some(FaultKind::InternalError) => {
            return Ok(log(
                error_response(&ApiError::internal("kube-sim injected an internal error")),
                "",
            ));
        }
        Some(FaultKind::Conflict) => {
            let (group, resource, name) = target_info
                .as_ref()
                .map_or(("", "", ""), |(g, r, _, n, _, _)| {
                    (g.as_str(), r.as_str(), n.as_deref().unwrap_or(""))
                });
            return Ok(log(
                error_response(&ApiError::conflict(group, resource, name, ApiError::STALE)),
                "",
            ));
        }
        Some(FaultKind::TooManyRequests {
            retry_after_seconds,
        }) => {
            return Ok(log(
                error_response(&ApiError::too_many_requests(retry_after_seconds)),
                "",
            ));
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
    let requestor = match auth.as_deref() {
        Some(a) => a.strip_prefix("Bearer ").and_then(|t| {
            shared
                .levers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .user_of(t.trim(), &shared.token)
                .map(|name| {
                    // The admin is in `system:masters`, as a cluster's admin kubeconfig is;
                    // every authenticated user is in `system:authenticated`.
                    if name == USER {
                        UserInfo::new(&name, &[crate::rbac::MASTERS, crate::rbac::AUTHENTICATED])
                    } else {
                        UserInfo::new(&name, &[crate::rbac::AUTHENTICATED])
                    }
                })
        }),
        None => {
            public.then(|| UserInfo::new(crate::rbac::ANONYMOUS, &[crate::rbac::UNAUTHENTICATED]))
        }
    };
    let Some(requestor) = requestor else {
        return Ok(log(error_response(&ApiError::unauthorized()), ""));
    };
    // Impersonation (`kubectl --as`): the requestor needs the `impersonate` verb; RBAC then
    // judges, and names, the impersonated user.
    let user = match impersonate(&shared, req.headers(), &requestor, &request_uri) {
        Ok(u) => u,
        Err(resp) => return Ok(log(resp, &requestor.name)),
    };
    let denied = target_info
        .as_ref()
        .is_some_and(|(g, plural, ns, _, sub, _)| {
            let resource = match sub {
                Some(s) => format!("{plural}/{s}"),
                None => plural.clone(),
            };
            shared
                .levers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .denials
                .iter()
                .any(|d| d.matches(verb, g, &resource, ns.as_deref()))
        });
    if denied {
        let (g, plural, ns, name, sub, _) = target_info.expect("denied implies a resource target");
        let resource = match sub {
            Some(s) => format!("{plural}/{s}"),
            None => plural,
        };
        let e = ApiError::forbidden(
            &user.name,
            verb,
            &g,
            &resource,
            name.as_deref().unwrap_or(""),
            ns.as_deref(),
        );
        return Ok(log(error_response(&e), &user.name));
    }
    // RBAC for everyone but `system:masters`: the attributes the apiserver derives from the
    // URL (see `rbac::request_attributes`), judged by the stored Roles and bindings; a refusal
    // is `responsewriters.Forbidden` (apiserver@kubernetes-1.33.0
    // pkg/endpoints/filters/authorization.go:71-97).
    if !user.privileged() {
        let attrs = crate::rbac::request_attributes(
            method.as_str(),
            &path,
            watch,
            query.get("fieldSelector"),
        );
        let decision = {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            crate::rbac::authorize(&st, &user, &attrs)
        };
        if let crate::rbac::Decision::Deny(reason) = decision {
            let e = ApiError::forbidden_attrs(&user.name, &attrs, &reason);
            return Ok(log(error_response(&e), &user.name));
        }
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
        return Ok(log(
            error_response(&ApiError::bad_request("cannot read the request body")),
            &user.name,
        ));
    };
    // Every route of a deprecated resource carries its warning, whatever the handler answers
    // (`utilwarning.AddWarningsHandler`, apiserver@kubernetes-1.33.0 pkg/endpoints/installer.go:811).
    let with_warning = |mut resp: Response<Body>| {
        if endpoints
            && let Ok(v) =
                HeaderValue::from_str(&util::warning_header(KubeVersion::ENDPOINTS_WARNING))
        {
            resp.headers_mut().append(header::WARNING, v);
        }
        resp
    };
    if watch && method == Method::GET {
        let resp = with_warning(start_watch(&shared, &path, &query, &accept));
        return Ok(log(resp, &user.name));
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
                    return Ok(log(
                        error_response(&ApiError::unsupported_media_type_msg(e)),
                        &user.name,
                    ));
                }
            }
        } else {
            (body, content_type)
        };
    let resp = with_warning(dispatch(
        &shared,
        &user,
        &method,
        &path,
        &query,
        &accept,
        &content_type,
        &user_agent,
        &body,
    ));
    if method == Method::DELETE && path.contains("namespaces") {
        schedule_finalization(&shared);
    }
    Ok(log(resp, &user.name))
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
    user: &UserInfo,
    method: &Method,
    path: &str,
    q: &Query,
    accept: &str,
    content_type: &str,
    user_agent: &str,
    body: &[u8],
) -> Response<Body> {
    let (route, version) = {
        let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
        (route(&st, path), st.version)
    };
    let get_only = |r: Response<Body>| {
        if *method == Method::GET {
            r
        } else {
            error_response(&ApiError::method_not_allowed(method.as_str(), path))
        }
    };
    match route {
        Route::Version => get_only(ok_json(200, &discovery::version(version))),
        Route::Health => get_only(json_response(
            200,
            b"ok".to_vec(),
            "text/plain; charset=utf-8",
        )),
        Route::Api => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match Aggregated::from_accept(accept, version) {
                Some(f) => json_response(
                    200,
                    discovery::aggregated(&st.surface(), true, f)
                        .to_string()
                        .into_bytes(),
                    f.content_type(),
                ),
                None => ok_json(200, &discovery::api_versions(&shared.address)),
            })
        }
        Route::Apis => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match Aggregated::from_accept(accept, version) {
                Some(f) => json_response(
                    200,
                    discovery::aggregated(&st.surface(), false, f)
                        .to_string()
                        .into_bytes(),
                    f.content_type(),
                ),
                None => ok_json(200, &discovery::api_group_list(&st.surface())),
            })
        }
        Route::ApiGroup(g) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match discovery::api_group(&st.surface(), &g) {
                Some(v) => ok_json(200, &v),
                None => error_response(&ApiError::path_not_found()),
            })
        }
        Route::ResourceList(g, v) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match discovery::api_resource_list(&st.surface(), &g, &v) {
                Some(v) => ok_json(200, &v),
                None => error_response(&ApiError::path_not_found()),
            })
        }
        // `/openapi/v3` only where the version serves it (see `KubeVersion::openapi_v3`);
        // below, kubectl falls back to `/openapi/v2`.
        Route::OpenApiV3Root | Route::OpenApiV3(..) if !version.openapi_v3() => {
            error_response(&ApiError::path_not_found())
        }
        Route::OpenApiV3Root => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(ok_json(200, &discovery::openapi_root(&st.surface())))
        }
        Route::OpenApiV3(g, v) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(match discovery::openapi_gv(&st.surface(), &g, &v) {
                Some(d) => ok_json(200, &d),
                None => error_response(&ApiError::path_not_found()),
            })
        }
        Route::OpenApiV2 => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            get_only(json_response(
                200,
                discovery::openapi_v2_protobuf(&st.surface()),
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            ))
        }
        Route::Unknown => error_response(&ApiError::path_not_found()),
        Route::Resource(t) => {
            match resource(
                shared,
                user,
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

/// How a read is rendered, negotiated from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    /// The object or `<Kind>List` itself.
    Plain,
    /// `meta.k8s.io/<version>` Table.
    Table(&'static str),
    /// `meta.k8s.io/<version>` PartialObjectMetadata (`list`: PartialObjectMetadataList).
    Meta { list: bool, version: &'static str },
}

/// Negotiates the response form as the apiserver's `NegotiateOutputMediaType` does with the
/// endpoint's restrictions: clauses in the client's order (after q-values); a clause naming a
/// conversion (`as=…;g=…;v=…`) is taken only when the version allows it (Table and
/// PartialObjectMetadata[List] of a served `meta.k8s.io` version; see
/// `KubeVersion::meta_versions`); a plain clause for a media type the endpoint serializes is
/// taken as is. Nothing acceptable: 406 listing the endpoint's media types
/// (apiserver@kubernetes-1.14.0 pkg/endpoints/handlers/negotiation/negotiate.go:45-50,
/// errors.go:37-38). Built-in kinds serialize JSON, YAML and protobuf
/// (apimachinery@kubernetes-1.14.0 pkg/runtime/serializer/codec_factory.go:52-75); custom
/// resources JSON and YAML (apiext@kubernetes-1.14.0 pkg/apiserver/customresource_handler.go:643-661).
fn negotiate(accept: &str, version: KubeVersion, builtin: bool) -> Result<Render, ApiError> {
    let types: &[&str] = if builtin {
        &["json", "yaml", "vnd.kubernetes.protobuf"]
    } else {
        &["json", "yaml"]
    };
    let clauses = util::parse_accept(accept);
    if clauses.is_empty() {
        return Ok(Render::Plain);
    }
    for c in &clauses {
        let matched = match (c.typ.as_str(), c.subtype.as_str()) {
            ("application" | "*", "*") => Some(types[0]),
            ("application", sub) => types.iter().copied().find(|t| *t == sub),
            _ => None,
        };
        let Some(subtype) = matched else { continue };
        let (kind, group, v) = (c.param("as"), c.param("g"), c.param("v"));
        if kind.is_none() && group.is_none() && v.is_none() {
            return Ok(Render::Plain);
        }
        if group != Some("meta.k8s.io") {
            continue;
        }
        let Some(meta_version) = version
            .meta_versions()
            .iter()
            .copied()
            .find(|mv| Some(*mv) == v)
        else {
            continue;
        };
        match kind {
            Some("Table") if subtype == "json" || subtype == "yaml" => {
                return Ok(Render::Table(meta_version));
            }
            Some("PartialObjectMetadata") => {
                return Ok(Render::Meta {
                    list: false,
                    version: meta_version,
                });
            }
            Some("PartialObjectMetadataList") => {
                return Ok(Render::Meta {
                    list: true,
                    version: meta_version,
                });
            }
            _ => {}
        }
    }
    let media: Vec<String> = types.iter().map(|t| format!("application/{t}")).collect();
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: {}",
        media.join(", ")
    )))
}

/// Go's `%T` of the object the apiserver would have converted: the internal type of a built-in
/// kind (`*core.ConfigMapList`), `*unstructured.Unstructured[List]` for custom resources.
fn go_type(rt: &ResourceType, list: bool) -> String {
    let suffix = if list { "List" } else { "" };
    if rt.builtin {
        let pkg = match rt.group.as_str() {
            "" => "core",
            g => g.split('.').next().unwrap_or(g),
        };
        format!("*{pkg}.{}{suffix}", rt.kind)
    } else {
        format!("*unstructured.Unstructured{suffix}")
    }
}

/// `PartialObjectMetadata` of an object (`meta.AsPartialObjectMetadata`: its whole ObjectMeta).
fn partial_metadata(o: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The metadata rendering of a read, or the 406 the apiserver gives a list/object mismatch
/// (apiserver@kubernetes-1.15.0 pkg/endpoints/handlers/response.go:189,210).
fn metadata_response(
    rt: &ResourceType,
    items: &[&Value],
    list_meta: Option<&Value>,
    want_list: bool,
    version: &str,
) -> Result<Response<Body>, ApiError> {
    match (list_meta, want_list) {
        (Some(_), false) => Err(ApiError::not_acceptable(format!(
            "you requested PartialObjectMetadata, but the requested object is a list ({})",
            go_type(rt, true)
        ))),
        (None, true) => Err(ApiError::not_acceptable(format!(
            "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
            go_type(rt, false)
        ))),
        (Some(meta), true) => {
            let list = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": format!("meta.k8s.io/{version}"),
                "metadata": meta,
                "items": items.iter().map(|o| partial_metadata(o, version)).collect::<Vec<_>>(),
            });
            Ok(ok_json(200, &list))
        }
        (None, false) => Ok(ok_json(
            200,
            &partial_metadata(items.first().copied().unwrap_or(&Value::Null), version),
        )),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Shared,
    user: &UserInfo,
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
            ("POST", true) => access_review(shared, user, body),
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
        ("GET", Some(name)) if sub.is_none() => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            let render = negotiate(accept, st.version, rt.builtin)?;
            let obj = st
                .get_obj(&rt.key(), ns, name)
                .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
            match render {
                Render::Plain => Ok(ok_json(200, &State::output(obj, rt, &t.version))),
                Render::Table(tv) => {
                    let meta = json!({"resourceVersion": util::str_at(obj, &["metadata", "resourceVersion"])});
                    Ok(table_response(&st, rt, &t.version, &[obj], &meta, q, tv))
                }
                Render::Meta { list, version } => {
                    metadata_response(rt, &[obj], None, list, version)
                }
            }
        }
        ("GET", Some(name)) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            Ok(ok_json(200, &st.get(rt, &t.version, ns, name)?))
        }
        ("GET", None) => {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            let render = negotiate(accept, st.version, rt.builtin)?;
            let lo = list_opts(q)?;
            check_fields(&st, rt, &t.version, &lo, q)?;
            match render {
                Render::Plain => {
                    let body = st.list(rt, &t.version, t.namespace.as_deref(), &lo)?;
                    Ok(json_response(200, body, "application/json"))
                }
                Render::Table(tv) => {
                    let (items, meta) = st.list_page(rt, t.namespace.as_deref(), &lo)?;
                    Ok(table_response(&st, rt, &t.version, &items, &meta, q, tv))
                }
                Render::Meta { list, version } => {
                    let (items, meta) = st.list_page(rt, t.namespace.as_deref(), &lo)?;
                    // 1.14's v1beta1 PartialObjectMetadataList is built from the items alone:
                    // no `continue`, no `resourceVersion` (apiserver@kubernetes-1.14.0
                    // pkg/endpoints/handlers/response.go:188-207); 1.15 copies them (:206-251).
                    let meta = if st.version.meta_v1() {
                        meta
                    } else {
                        json!({})
                    };
                    metadata_response(rt, &items, Some(&meta), list, version)
                }
            }
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
    table_version: &str,
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
    let t = table::at_version(
        table::table(
            rt,
            version,
            items,
            meta,
            columns.as_ref(),
            table::Include::parse(q.get("includeObject")),
            util::now_unix(),
        ),
        table_version,
    );
    json_response(
        200,
        serde_json::to_vec(&t).expect("Value serialises"),
        &table::content_type(table_version),
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
            let ct = content_type.split(';').next().unwrap_or("").trim();
            if !st.version.patch_types(true).contains(&ct) {
                return Err(ApiError::restful_unsupported_media_type());
            }
            let p = parse_body(body)?;
            let r = match ct {
                "application/json-patch+json" => crate::patch::json_patch(&mut wanted, &p),
                "application/merge-patch+json" => {
                    crate::patch::merge_patch(&mut wanted, &p);
                    Ok(())
                }
                "application/strategic-merge-patch+json" => {
                    crate::patch::strategic_merge_patch(&mut wanted, &p)
                }
                other => {
                    return Err(ApiError::unsupported_media_type_msg(format!(
                        "kube-sim does not implement {other} patches of deployments/scale: use a JSON, merge or strategic merge patch"
                    )));
                }
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

/// `kubectl auth can-i`: the review's attributes judged as a request of the reviewing user
/// would be: a denial lever covering them refuses, `system:masters` is allowed, everyone else
/// gets RBAC's decision and reason (`RBAC: allowed by RoleBinding "b/ns" of Role "r" to User "u"`).
fn access_review(
    shared: &Shared,
    user: &UserInfo,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut review = parse_body(body)?;
    let decision = if let Some(a) = review.pointer("/spec/resourceAttributes") {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("");
        let attrs = crate::rbac::Attributes::resource(
            s("verb"),
            s("group"),
            s("resource"),
            s("subresource"),
            s("namespace"),
            s("name"),
        );
        let ns = Some(s("namespace")).filter(|n| !n.is_empty());
        let denied = shared
            .levers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .denials
            .iter()
            .any(|d| d.matches(s("verb"), s("group"), &attrs.combined_resource(), ns));
        if denied {
            crate::rbac::Decision::Deny(String::new())
        } else if user.privileged() {
            crate::rbac::Decision::Allow(format!(
                "RBAC: allowed by ClusterRoleBinding \"kube-sim\" of ClusterRole \"cluster-admin\" to User {:?}",
                user.name
            ))
        } else {
            let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
            crate::rbac::authorize(&st, user, &attrs)
        }
    } else {
        let a = review
            .pointer("/spec/nonResourceAttributes")
            .cloned()
            .unwrap_or_default();
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let attrs = crate::rbac::Attributes::non_resource(&s("verb"), &s("path"));
        let st = shared.state.read().unwrap_or_else(PoisonError::into_inner);
        crate::rbac::authorize(&st, user, &attrs)
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = match decision {
        crate::rbac::Decision::Allow(reason) if reason.is_empty() => json!({"allowed": true}),
        crate::rbac::Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        crate::rbac::Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        crate::rbac::Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
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
    let mut audiences: Vec<String> = crate::util::strings(req.pointer("/spec/audiences"));
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
    let render = match negotiate(accept, st.version, t.rt.builtin) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
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
    let wanted = move |o: &Value| {
        ns.as_deref().is_none_or(|n| util::namespace_of(o) == n)
            && single.as_deref().is_none_or(|n| util::name_of(o) == n)
            && lo.labels.matches(o)
            && lo.fields.matches(o)
    };
    // `kubectl get -w` asks for Table events: one row each, column definitions on the first only.
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
        let rt = t.rt.clone();
        let version = t.version.clone();
        move |ty: &str, o: &Value| {
            let object = match render {
                Render::Table(tv) => {
                    let meta = json!({"resourceVersion": util::str_at(o, &["metadata", "resourceVersion"])});
                    let mut tb = table::at_version(
                        table::table(
                            &rt,
                            &version,
                            &[o],
                            &meta,
                            printer_columns.as_ref(),
                            include,
                            util::now_unix(),
                        ),
                        tv,
                    );
                    if sent_columns.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tb["columnDefinitions"] = json!([]);
                    }
                    tb
                }
                // A metadata watch streams PartialObjectMetadata events.
                Render::Meta { version: mv, .. } => partial_metadata(o, mv),
                Render::Plain => State::output(o, &rt, &version),
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
                            let gone = ApiError::expired("too old resource version");
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
