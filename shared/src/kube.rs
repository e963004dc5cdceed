//! Kubernetes client from kubectl's flags, request retries, and errors an operator can act on.
//!
//! Every request a verb makes goes through [`Connection::call`], which bounds it by
//! `--request-timeout`, retries transient failures (429/5xx, connection resets) with jittered
//! backoff honouring the server's `retryAfterSeconds`, and turns what is left into an [`Error`]
//! that names the server, the verb, the resource and the namespace.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use ::kube::{Client, Config};

use crate::errors::Diagnose;
use crate::flags::KubeArgs;

/// The field manager meshvm writes with (every write goes through [`crate::plan::write`]).
pub const FIELD_MANAGER: &str = "meshvm";

/// How many times a transient failure is retried before it is reported.
const MAX_RETRIES: u32 = 6;

/// A client bound to one kubeconfig context, with what error messages need to name.
#[derive(Clone)]
pub struct Connection {
    /// The kube-rs client.
    pub client: Client,
    /// The namespace from `-n`, else the context's, else `default`.
    pub namespace: String,
    /// Whether `-n` was given explicitly.
    pub namespace_explicit: bool,
    /// Where the namespace came from ([`resolve_namespace`]).
    pub namespace_source: NamespaceSource,
    /// The kubeconfig context in use.
    pub context: String,
    /// The API server URL.
    pub server: String,
    timeout: Option<Duration>,
    /// What this run learnt about how the server takes writes (shared by clones).
    /// What this run learnt about the server, kept by the layers above (served versions,
    /// whether it takes server-side apply), one value per type; shared by clones.
    memo: Arc<Memo>,
}

/// Values keyed by their type, each made once ([`Connection::memo`]).
#[derive(Default)]
pub struct Memo(std::sync::Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl Memo {
    fn get<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let value = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        value
            .downcast::<T>()
            .expect("memo entries are keyed by their own type")
    }
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo").finish_non_exhaustive()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// One API request, described for error messages: `create secrets in namespace istio-system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The Kubernetes verb: get, list, create, update, patch, delete.
    pub verb: &'static str,
    /// The plural resource, e.g. `secrets` or `destinationrules.networking.istio.io`.
    pub resource: String,
    /// The namespace, for namespaced resources.
    pub namespace: Option<String>,
    /// The object's name, when there is one.
    pub name: Option<String>,
}

impl Request {
    /// A request of `verb` on `resource`.
    pub fn new(verb: &'static str, resource: impl Into<String>) -> Self {
        Self {
            verb,
            resource: resource.into(),
            namespace: None,
            name: None,
        }
    }
    /// In this namespace.
    #[must_use]
    pub fn ns(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
    /// On this object.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, " {ns}/{name}"),
            (None, Some(name)) => write!(f, " {name}"),
            (Some(ns), None) => write!(f, " in namespace {ns}"),
            (None, None) => Ok(()),
        }
    }
}

/// Why talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--kubeconfig` names a file that is not there.
    #[error("kubeconfig {}: file does not exist", path.display())]
    KubeconfigMissing {
        /// The path as given.
        path: PathBuf,
    },
    /// No kubeconfig could be found at all.
    #[error("no kubeconfig found: {looked}")]
    NoKubeconfig {
        /// Where we looked.
        looked: String,
    },
    /// The kubeconfig could not be read or parsed.
    #[error("kubeconfig {}: {message}", path.display())]
    KubeconfigInvalid {
        /// The file.
        path: PathBuf,
        /// The parser's words (with line and column when it gives them).
        message: String,
    },
    /// `--context` (or current-context) names a context the kubeconfig lacks.
    #[error(
        "context {name:?} is not in the kubeconfig (known contexts: {})",
        list_or_none(known)
    )]
    UnknownContext {
        /// The context asked for.
        name: String,
        /// The contexts the kubeconfig has.
        known: Vec<String>,
    },
    /// Neither `--context` nor `current-context`.
    #[error(
        "the kubeconfig has no current-context (known contexts: {})",
        list_or_none(known)
    )]
    NoCurrentContext {
        /// The contexts the kubeconfig has.
        known: Vec<String>,
    },
    /// The kubeconfig context is incomplete or inconsistent.
    #[error("kubeconfig context {context:?} cannot be used")]
    Config {
        /// The context.
        context: String,
        /// What kube-rs found wrong.
        #[source]
        source: KubeconfigError,
    },
    /// The client could not be built from a valid configuration.
    #[error("cannot build a client for context {context:?}")]
    Client {
        /// The context.
        context: String,
        /// Why.
        #[source]
        source: ::kube::Error,
    },
    /// No connection to the API server.
    #[error("cannot reach the API server at {server} to {action}: {reason}")]
    Unreachable {
        /// The request.
        action: Request,
        /// The server URL.
        server: String,
        /// The transport's words.
        reason: String,
    },
    /// The request took longer than `--request-timeout`.
    #[error("the API server at {server} did not answer within {timeout:?} to {action}")]
    Timeout {
        /// The request.
        action: Request,
        /// The server URL.
        server: String,
        /// The limit.
        timeout: Duration,
    },
    /// 401: the credentials were refused.
    #[error(
        "the API server at {server} refused the credentials of context {context:?} (401 Unauthorized) to {action}"
    )]
    Unauthorized {
        /// The request.
        action: Request,
        /// The server URL.
        server: String,
        /// The context whose user was refused.
        context: String,
    },
    /// 403: RBAC refused the verb.
    #[error("forbidden: RBAC does not allow {} on {}{}: {message}", action.verb, action.resource, namespace_words(action))]
    Forbidden {
        /// The request.
        action: Request,
        /// The server's message.
        message: String,
    },
    /// Any other answer from the API server.
    #[error("failed to {action}: {message} ({code} {reason})")]
    Api {
        /// The request.
        action: Request,
        /// HTTP code.
        code: u16,
        /// Kubernetes `Status.reason`.
        reason: String,
        /// Kubernetes `Status.message`.
        message: String,
    },
    /// A paged list whose continue token expired again after one restart from scratch.
    #[error(
        "failed to {action}: the list changed faster than it could be read page by page (its continue token expired twice, 410 Expired)"
    )]
    ListExpired {
        /// The request.
        action: Request,
    },
    /// A transport or decoding failure that is not about reaching the server.
    #[error("failed to {action}")]
    Other {
        /// The request.
        action: Request,
        /// Why.
        #[source]
        source: ::kube::Error,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn namespace_words(action: &Request) -> String {
    action
        .namespace
        .as_ref()
        .map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default()
}

impl Error {
    /// The HTTP status code of an API answer, if the error is one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
    /// 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    /// 409 with reason AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Api { code: 409, reason, .. } if reason == "AlreadyExists")
    }
    /// 415: the server does not take the request body's media type (e.g. server-side apply
    /// before Kubernetes 1.16).
    pub fn is_unsupported_media_type(&self) -> bool {
        self.code() == Some(415)
    }
    /// 409 with reason Conflict (stale resourceVersion or field-manager conflict).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { code: 409, reason, .. } if reason == "Conflict")
    }
    /// 410 Gone: a list's continue token (or resourceVersion) is too old
    /// (k8s.io/apimachinery@kubernetes-1.14.0 pkg/api/errors/errors.go:213-220, `NewResourceExpired`).
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
    /// 406 Not Acceptable: the server cannot answer in the media type asked for, e.g. a
    /// `meta.k8s.io/v1` metadata list before Kubernetes 1.15
    /// (k8s.io/apiserver@kubernetes-1.14.0 pkg/endpoints/handlers/negotiation/errors.go:41-45).
    pub fn is_not_acceptable(&self) -> bool {
        self.code() == Some(406)
    }
    /// 422 Invalid: the server refused the object's content.
    pub fn is_invalid(&self) -> bool {
        self.code() == Some(422)
    }
    /// The server's `Status.message`, for answers that carry one.
    pub fn status_message(&self) -> Option<&str> {
        match self {
            Error::Api { message, .. } | Error::Forbidden { message, .. } => Some(message),
            _ => None,
        }
    }
}

impl Diagnose for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::KubeconfigMissing { .. } | Error::NoKubeconfig { .. } => Some(
                "pass --kubeconfig PATH, set KUBECONFIG, or create ~/.kube/config (e.g. with your cloud's get-credentials command)".into(),
            ),
            Error::KubeconfigInvalid { .. } => {
                Some("fix the file, or check it with `kubectl config view`".into())
            }
            Error::UnknownContext { .. } | Error::NoCurrentContext { .. } => Some(
                "pass --context NAME with one of the known contexts, or `kubectl config use-context NAME`".into(),
            ),
            Error::Unreachable { .. } | Error::Timeout { .. } => Some(
                "check that the cluster is up and reachable from here (VPN, firewall), or raise --request-timeout".into(),
            ),
            Error::Unauthorized { .. } => Some(
                "your token or client certificate was refused: refresh the credentials (get-credentials) and retry".into(),
            ),
            Error::ListExpired { .. } => Some(
                "run the command again; if it keeps failing, the API server's etcd compacts faster than one list takes (check --etcd-compaction-interval) or the cluster is overloaded".into(),
            ),
            Error::Forbidden { action, .. } => Some(format!(
                "ask a cluster admin for a Role granting `{}` on `{}`{}, or use --as with an identity that has it{}",
                action.verb,
                action.resource,
                namespace_words(action),
                crate::rbac::Verb::current().map_or(String::new(), |verb| format!(
                    "; {} prints the role it needs",
                    verb.print_rbac_command()
                ))
            )),
            _ => None,
        }
    }
}

/// Read the kubeconfig the way kubectl does: `--kubeconfig`, else every existing path in
/// `KUBECONFIG` merged (missing ones skipped, as client-go does), else `~/.kube/config`.
pub fn load_kubeconfig(explicit: Option<&Path>) -> Result<(Kubeconfig, Vec<PathBuf>), Error> {
    load_kubeconfig_from(
        explicit,
        std::env::var_os("KUBECONFIG"),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// [`load_kubeconfig`] with `KUBECONFIG` and `HOME` passed in.
pub fn load_kubeconfig_from(
    explicit: Option<&Path>,
    kubeconfig_env: Option<std::ffi::OsString>,
    home: Option<PathBuf>,
) -> Result<(Kubeconfig, Vec<PathBuf>), Error> {
    if let Some(path) = explicit {
        if !path.exists() {
            return Err(Error::KubeconfigMissing {
                path: path.to_owned(),
            });
        }
        return Ok((read_one(path)?, vec![path.to_owned()]));
    }
    if let Some(value) = kubeconfig_env.filter(|v| !v.is_empty()) {
        let listed: Vec<PathBuf> = std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let present: Vec<PathBuf> = listed.iter().filter(|p| p.exists()).cloned().collect();
        if present.is_empty() {
            return Err(Error::NoKubeconfig {
                looked: format!(
                    "none of the files in KUBECONFIG exists ({})",
                    listed
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let mut merged: Option<Kubeconfig> = None;
        for path in &present {
            let next = read_one(path)?;
            merged = Some(match merged {
                None => next,
                Some(mut m) => {
                    // client-go treats an empty current-context as unset: a later file's wins.
                    if m.current_context.as_deref() == Some("") {
                        m.current_context = None;
                    }
                    m
                }
                .merge(next)
                .map_err(|e| Error::KubeconfigInvalid {
                    path: path.clone(),
                    message: e.to_string(),
                })?,
            });
        }
        return Ok((merged.unwrap_or_default(), present));
    }
    let Some(path) = home.map(|h| h.join(".kube").join("config")) else {
        return Err(Error::NoKubeconfig {
            looked: "HOME is not set and neither --kubeconfig nor KUBECONFIG is given".into(),
        });
    };
    if !path.exists() {
        return Err(Error::NoKubeconfig {
            looked: format!(
                "{} does not exist and neither --kubeconfig nor KUBECONFIG is given",
                path.display()
            ),
        });
    }
    Ok((read_one(&path)?, vec![path]))
}

fn read_one(path: &Path) -> Result<Kubeconfig, Error> {
    // kube-client indexes past the end of a UTF-16 file with an odd byte count (a panic):
    // refuse such a file ourselves, with words.
    if let Ok(bytes) = std::fs::read(path)
        && (bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]))
        && bytes.len() % 2 == 1
    {
        return Err(Error::KubeconfigInvalid {
            path: path.to_owned(),
            message: "starts with a UTF-16 byte-order mark but has an odd number of bytes: it is truncated or not text".into(),
        });
    }
    Kubeconfig::read_from(path).map_err(|e| Error::KubeconfigInvalid {
        path: path.to_owned(),
        message: match e {
            KubeconfigError::ReadConfig(io, _) => io.to_string(),
            other => crate::errors::error_chain(&other),
        },
    })
}

/// Where the namespace a verb works in came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceSource {
    /// `-n` (or prepare's and bundle's older `--vm-namespace`).
    Flag,
    /// The kubeconfig context's `namespace` (the context's name).
    Context(String),
    /// kubectl's `default`: the context (named) sets no namespace.
    Default(String),
}

/// The namespace a verb works in, and why ([`resolve_namespace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbNamespace {
    /// The namespace.
    pub name: String,
    /// Where it came from.
    pub source: NamespaceSource,
}

impl VerbNamespace {
    /// Named on the command line.
    pub fn flag(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: NamespaceSource::Flag,
        }
    }

    /// Whether it is `default` without anyone naming it: the case worth a note on stderr.
    pub fn is_implicit_default(&self) -> bool {
        self.name == "default" && self.source != NamespaceSource::Flag
    }

    /// Why this namespace: `-n`, `the namespace of context kube-sim`, or kubectl's default.
    pub fn why(&self) -> String {
        match &self.source {
            NamespaceSource::Flag => "-n".into(),
            NamespaceSource::Context(c) => format!("the namespace of context {c}"),
            NamespaceSource::Default(c) => {
                format!("kubectl's default: context {c} sets no namespace")
            }
        }
    }
}

/// The ONE rule every verb's namespace follows, kubectl's: `-n` (in `args.namespace`; prepare
/// and bundle merge `--vm-namespace` into it first with [`KubeArgs::namespace_flag`]), else the
/// namespace of the context in use, else `default`. Reads the kubeconfig only when no flag names
/// the namespace; [`connect`] applies the same rule to the context it connects to.
pub fn resolve_namespace(args: &KubeArgs, context: Option<&str>) -> Result<VerbNamespace, Error> {
    if let Some(ns) = &args.namespace {
        return Ok(VerbNamespace::flag(ns.clone()));
    }
    let (kubeconfig, _paths) = load_kubeconfig(args.kubeconfig.as_deref())?;
    let name = context_name(&kubeconfig, context)?;
    Ok(namespace_in(args, &kubeconfig, &name))
}

/// The namespace for `args` in the kubeconfig's context `context` (client-go's rule: the
/// context's `namespace` when non-empty, else `default`).
fn namespace_in(args: &KubeArgs, kubeconfig: &Kubeconfig, context: &str) -> VerbNamespace {
    if let Some(ns) = &args.namespace {
        return VerbNamespace::flag(ns.clone());
    }
    let from_context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.namespace.clone())
        .filter(|ns| !ns.is_empty());
    match from_context {
        Some(name) => VerbNamespace {
            name,
            source: NamespaceSource::Context(context.to_owned()),
        },
        None => VerbNamespace {
            name: "default".into(),
            source: NamespaceSource::Default(context.to_owned()),
        },
    }
}

/// The context to use: `context`, else the kubeconfig's current-context; it must exist.
fn context_name(kubeconfig: &Kubeconfig, context: Option<&str>) -> Result<String, Error> {
    let known: Vec<String> = kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
    match context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone().filter(|c| !c.is_empty()))
    {
        Some(name) if known.contains(&name) => Ok(name),
        Some(name) => Err(Error::UnknownContext { name, known }),
        None => Err(Error::NoCurrentContext { known }),
    }
}

/// Connect with the connection flags, to `context` (or the single `--context`, or current-context).
pub async fn connect(args: &KubeArgs, context: Option<&str>) -> Result<Connection, Error> {
    let (kubeconfig, _paths) = load_kubeconfig(args.kubeconfig.as_deref())?;
    let name = context_name(&kubeconfig, context)?;
    let verb_namespace = namespace_in(args, &kubeconfig, &name);
    let options = KubeConfigOptions {
        context: Some(name.clone()),
        cluster: args.cluster.clone(),
        user: args.user.clone(),
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| Error::Config {
            context: name.clone(),
            source,
        })?;
    if let Some(user) = &args.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !args.as_group.is_empty() {
        config.auth_info.impersonate_groups = Some(args.as_group.clone());
    }
    let timeout = (!args.request_timeout.is_zero()).then_some(args.request_timeout);
    config.connect_timeout = timeout;
    config.read_timeout = timeout;
    config.write_timeout = timeout;
    config.reset_reader_on_write = true;
    // We retry ourselves (including 500s and resets, which kube-rs does not), and only where safe.
    config.default_retry = false;
    let namespace_explicit = args.namespace.is_some();
    config.default_namespace.clone_from(&verb_namespace.name);
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let client = Client::try_from(config).map_err(|source| Error::Client {
        context: name.clone(),
        source,
    })?;
    Ok(Connection {
        client,
        namespace: verb_namespace.name.clone(),
        namespace_explicit,
        namespace_source: verb_namespace.source,
        context: name,
        server,
        timeout,
        memo: Arc::default(),
    })
}

/// Whether a failure may pass if the same request is sent again.
fn is_transient(err: &::kube::Error) -> bool {
    match err {
        ::kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => {
            !matches!(
                transport_kind(err),
                Some(std::io::ErrorKind::ConnectionRefused)
            ) && !is_timeout(err)
        }
        _ => false,
    }
}

/// The io error kind deepest in a transport failure, if any.
fn transport_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut kind = None;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            kind = Some(io.kind());
        }
        current = e.source();
    }
    kind
}

/// The innermost message of an error chain ("Connection refused (os error 111)"): what the
/// transport saw, without kube-rs' and hyper's wrapper words.
fn deepest_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("timed out") || text.contains("deadline has elapsed") {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The delay before retry `attempt` (0-based): the server's `retryAfterSeconds` when it sent one,
/// else exponential from 50 ms with full jitter, capped at 2 s.
fn backoff(attempt: u32, err: &::kube::Error) -> Duration {
    if let ::kube::Error::Api(status) = err
        && let Some(secs) = status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
    {
        return Duration::from_secs(u64::from(secs).min(10));
    }
    let cap = Duration::from_millis(50 * (1 << attempt.min(6))).min(Duration::from_secs(2));
    cap.mul_f64(rand::random::<f64>().max(0.1))
}

impl Connection {
    /// A connection over an existing client (tests, embedding): no request timeout, `server`
    /// only names the cluster in messages.
    pub fn from_client(
        client: Client,
        namespace: impl Into<String>,
        server: impl Into<String>,
    ) -> Self {
        Connection {
            client,
            namespace: namespace.into(),
            namespace_explicit: false,
            namespace_source: NamespaceSource::Flag,
            context: String::new(),
            server: server.into(),
            timeout: None,
            memo: Arc::default(),
        }
    }

    /// The namespace verbs default to (`-n`, else the context's).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The namespace with where it came from ([`resolve_namespace`]'s rule).
    pub fn verb_namespace(&self) -> VerbNamespace {
        VerbNamespace {
            name: self.namespace.clone(),
            source: self.namespace_source.clone(),
        }
    }

    /// What this connection learnt about its server, of type `T` (created empty on first use):
    /// the layers above keep their knowledge here without this layer knowing their types.
    pub fn memo<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        self.memo.get()
    }

    /// Send a request (built afresh by `f` on each attempt), retrying transient failures.
    /// Only pass requests that are safe to repeat: reads, server-side apply, updates guarded by
    /// `resourceVersion`, deletes, and creates whose caller treats AlreadyExists as success.
    pub async fn call<T, F, Fut>(&self, action: Request, mut f: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ::kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            let result = match self.timeout {
                Some(limit) => match tokio::time::timeout(limit, f()).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(Error::Timeout {
                            action,
                            server: self.server.clone(),
                            timeout: limit,
                        });
                    }
                },
                None => f().await,
            };
            match result {
                Ok(value) => return Ok(value),
                Err(err) if attempt < MAX_RETRIES && is_transient(&err) => {
                    let delay = backoff(attempt, &err);
                    tracing::debug!(%action, attempt, ?delay, error = %err, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => return Err(self.classify(action, err)),
            }
        }
    }

    /// Turn a kube-rs error into one that names what was being done, and where.
    pub fn classify(&self, action: Request, err: ::kube::Error) -> Error {
        match err {
            ::kube::Error::Api(status) => match status.code {
                401 => Error::Unauthorized {
                    action,
                    server: self.server.clone(),
                    context: self.context.clone(),
                },
                403 => Error::Forbidden {
                    action,
                    message: status.message.clone(),
                },
                code => Error::Api {
                    action,
                    code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                },
            },
            err @ (::kube::Error::HyperError(_) | ::kube::Error::Service(_)) => {
                if is_timeout(&err) {
                    return Error::Timeout {
                        action,
                        server: self.server.clone(),
                        timeout: self.timeout.unwrap_or_default(),
                    };
                }
                Error::Unreachable {
                    action,
                    server: self.server.clone(),
                    reason: deepest_cause(&err),
                }
            }
            source => Error::Other { action, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_naturally() {
        let a = Request::new("create", "secrets")
            .ns("istio-system")
            .name("cacerts");
        assert_eq!(a.to_string(), "create secrets istio-system/cacerts");
        let a = Request::new("list", "destinationrules.networking.istio.io").ns("foo");
        assert_eq!(
            a.to_string(),
            "list destinationrules.networking.istio.io in namespace foo"
        );
    }

    #[test]
    fn forbidden_names_verb_resource_namespace() {
        let err = Error::Forbidden {
            action: Request::new("create", "secrets").ns("istio-system"),
            message: "secrets is forbidden".into(),
        };
        let text = err.to_string();
        assert!(
            text.contains("create on secrets in namespace istio-system"),
            "{text}"
        );
        assert!(err.hint().unwrap().contains("Role"));
    }

    #[test]
    fn transient_statuses() {
        let status = |code| {
            ::kube::Error::Api(
                ::kube::core::Status {
                    code,
                    ..Default::default()
                }
                .boxed(),
            )
        };
        for code in [429, 500, 502, 503, 504] {
            assert!(is_transient(&status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!is_transient(&status(code)), "{code}");
        }
    }

    #[test]
    fn backoff_honours_retry_after_and_caps() {
        let err = ::kube::Error::Api(
            ::kube::core::Status {
                code: 429,
                details: Some(::kube::core::response::StatusDetails {
                    name: String::new(),
                    group: String::new(),
                    kind: String::new(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: 3,
                }),
                ..Default::default()
            }
            .boxed(),
        );
        assert_eq!(backoff(0, &err), Duration::from_secs(3));
        let plain = ::kube::Error::Api(::kube::core::Status::default().boxed());
        for attempt in 0..20 {
            assert!(backoff(attempt, &plain) <= Duration::from_secs(2));
        }
    }
}
