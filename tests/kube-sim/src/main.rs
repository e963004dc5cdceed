//! `kube-sim serve`: runs the simulated API server until SIGINT/SIGTERM.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube_sim::{
    ContinueExpiry, Fault, FaultKind, KubeVersion, RuntimeConfig, Scenario, Server, ServerOptions,
};

/// A simulated Kubernetes API server for testing with real kubectl.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a scenario over HTTPS on 127.0.0.1.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FaultArg {
    /// HTTP 500 InternalError.
    #[value(name = "500")]
    InternalError,
    /// HTTP 429 TooManyRequests with Retry-After: 1.
    #[value(name = "429")]
    TooManyRequests,
    /// Connection reset.
    Reset,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Scenario YAML file (repeatable; objects from all files are loaded).
    #[arg(long = "scenario", value_name = "FILE")]
    scenarios: Vec<PathBuf>,
    /// Where to write the kubeconfig (context `kube-sim`).
    #[arg(long, value_name = "PATH")]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Latency added to every request, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0..=1) that a request fails with the --fault-kind fault.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = probability)]
    fault_rate: f64,
    /// What --fault-rate injects.
    #[arg(long, value_enum, default_value = "500")]
    fault_kind: FaultArg,
    /// Seed for fault injection.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Kubernetes version served, 1.13 … 1.35: what /version reports (kubectl's dispatcher picks
    /// kubectl.1.NN from it) and what the API serves and does; default: the scenario's
    /// `kubeVersion`, else 1.32.
    #[arg(long, value_name = "1.NN", value_parser = kube_version)]
    kube_version: Option<KubeVersion>,
    /// APIs to serve beyond the version's defaults, as kube-apiserver's flag
    /// (`networking.k8s.io/v1beta1=true`: ServiceCIDR on 1.31–1.32).
    #[arg(long, value_name = "GROUP/VERSION=true", value_parser = RuntimeConfig::parse)]
    runtime_config: Option<RuntimeConfig>,
    /// Feature gates, as kube-apiserver's flag; only `APIResponseCompression=false` (responses
    /// over 128 KiB are gzipped by default from 1.16 to clients asking for gzip).
    #[arg(long, value_name = "APIResponseCompression=false", value_parser = kube_sim::compression::parse_feature_gates)]
    feature_gates: Option<bool>,
    /// Continue tokens expire this many milliseconds after a list's first page (410 Expired).
    #[arg(
        long,
        value_name = "MS",
        conflicts_with = "expire_continue_after_pages"
    )]
    expire_continue_after_ms: Option<u64>,
    /// Continue tokens expire after this many continued pages of one list (0: every continue).
    #[arg(long, value_name = "N")]
    expire_continue_after_pages: Option<u32>,
    /// Citadel writes an `istio.<sa>` secret this many milliseconds after the ServiceAccount
    /// appears, as its informer does (0: at once; default: the scenario's, 300).
    #[arg(long, value_name = "MS")]
    citadel_issue_delay_ms: Option<u64>,
    /// Citadel's resync period in milliseconds: it re-issues secrets under a root it no longer
    /// holds (default: the scenario's, 1000).
    #[arg(long, value_name = "MS")]
    citadel_resync_ms: Option<u64>,
    /// A Deployment rollout (e.g. `kubectl rollout restart`) takes this many milliseconds
    /// (default: the scenario's, 300).
    #[arg(long, value_name = "MS")]
    rollout_delay_ms: Option<u64>,
    /// A deleted namespace stays Terminating this many milliseconds (0: deleted at once).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    namespace_finalize_ms: u64,
    /// An extra user with its own token (kubeconfig user and context of that name), whose
    /// requests RBAC authorizes from the Roles, ClusterRoles and bindings stored in the sim;
    /// repeatable. The kubeconfig's own user `kube-sim` stays unrestricted.
    #[arg(long = "user", value_name = "NAME", value_parser = user_name)]
    users: Vec<String>,
    /// Append one JSON line per request to FILE: verb, method, path, query, code, bytes (the
    /// response body's size before compression; null for watch streams), wire_bytes (as sent:
    /// gzipped or not), encoding ("gzip" or ""), user and accept.
    #[arg(long, value_name = "FILE")]
    request_log: Option<PathBuf>,
    /// An extra user who may also impersonate (`kubectl --as`); repeatable.
    #[arg(long = "impersonator", value_name = "NAME", value_parser = user_name)]
    impersonators: Vec<String>,
    /// CRD set to load; default: from the scenario.
    #[arg(long, value_name = "SET", value_parser = clap::builder::PossibleValuesParser::new(kube_sim::schema::CRD_SETS))]
    crds: Option<String>,
}

/// Clap parser: a probability (usage errors exit 2 through clap).
fn probability(s: &str) -> Result<f64, String> {
    let f: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number: give a probability from 0 to 1"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!(
            "{s} is not a probability: give a number from 0 to 1"
        ))
    }
}

/// Clap parser: a supported `1.NN` Kubernetes version.
fn kube_version(s: &str) -> Result<KubeVersion, String> {
    s.parse().map_err(|e: kube_sim::VersionError| e.to_string())
}

/// Clap parser: an extra user's name.
fn user_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s == kube_sim::server::USER || s.chars().any(char::is_control) {
        Err(format!(
            "{s:?} cannot be an extra user: give a non-empty name other than {:?}",
            kube_sim::server::USER
        ))
    } else {
        Ok(s.to_string())
    }
}

fn scenario(args: &ServeArgs) -> Result<Scenario, String> {
    let mut s = Scenario::from_files(&args.scenarios).map_err(|e| format!("{e}"))?;
    if let Some(set) = &args.crds {
        s = s.with_crds(set);
    }
    if let Some(v) = &args.kube_version {
        s = s.with_kube_version(&v.to_string());
    }
    s = s
        .with_latency(Duration::from_millis(args.latency_ms))
        .with_seed(args.seed)
        .with_namespace_finalize_delay(Duration::from_millis(args.namespace_finalize_ms));
    if let Some(ms) = args.citadel_issue_delay_ms {
        s = s.with_citadel_issue_delay(Duration::from_millis(ms));
    }
    if let Some(ms) = args.citadel_resync_ms {
        s = s.with_citadel_resync(Duration::from_millis(ms));
    }
    if let Some(ms) = args.rollout_delay_ms {
        s = s.with_rollout_delay(Duration::from_millis(ms));
    }
    if let Some(rc) = args.runtime_config {
        s = s.with_runtime_config(rc);
    }
    if let Some(on) = args.feature_gates {
        s = s.with_response_compression(on);
    }
    if let Some(ms) = args.expire_continue_after_ms {
        s = s.with_continue_expiry(ContinueExpiry::After(Duration::from_millis(ms)));
    }
    if let Some(n) = args.expire_continue_after_pages {
        s = s.with_continue_expiry(ContinueExpiry::AfterPages(n));
    }
    for u in &args.users {
        s = s.with_user(u);
    }
    for u in &args.impersonators {
        s = s.with_impersonator(u);
    }
    if args.fault_rate > 0.0 {
        let kind = match args.fault_kind {
            FaultArg::InternalError => FaultKind::InternalError,
            FaultArg::TooManyRequests => FaultKind::TooManyRequests {
                retry_after_seconds: 1,
            },
            FaultArg::Reset => FaultKind::ConnectionReset,
        };
        s = s.with_fault(Fault::rate(kind, args.fault_rate));
    }
    Ok(s)
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let s = scenario(&args)?;
    // Listen before announcing readiness, so a SIGTERM right after `ready` is handled.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
    let server = Server::try_start(
        s,
        ServerOptions {
            port: args.port,
            kubeconfig: Some(args.kubeconfig.clone()),
            request_log: args.request_log.clone(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {}", server.url())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    drop(server);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the tokio runtime: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flag_values_are_checked_by_clap() {
        for bad in [
            &[
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--fault-rate",
                "2",
            ][..],
            &[
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--kube-version",
                "2",
            ],
            &["kube-sim", "serve", "--kubeconfig", "k", "--crds", "nope"],
            &[
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--kube-version",
                "1.12",
            ],
            &[
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--runtime-config",
                "apps/v1beta1=true",
            ],
            &[
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--user",
                "kube-sim",
            ],
            &[
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--feature-gates",
                "APIResponseCompression=true",
            ],
            &[
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--expire-continue-after-ms",
                "5",
                "--expire-continue-after-pages",
                "1",
            ],
        ] {
            let e = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert!(
            Cli::try_parse_from([
                "kube-sim",
                "serve",
                "--kubeconfig",
                "k",
                "--fault-rate",
                "0.5",
                "--kube-version",
                "1.27"
            ])
            .is_ok()
        );
        let cli = Cli::try_parse_from([
            "kube-sim",
            "serve",
            "--kubeconfig",
            "k",
            "--kube-version",
            "1.31",
            "--runtime-config",
            "networking.k8s.io/v1beta1=true",
            "--expire-continue-after-pages",
            "2",
            "--namespace-finalize-ms",
            "300",
            "--user",
            "alice",
            "--impersonator",
            "bob",
            "--request-log",
            "/tmp/log.jsonl",
            "--feature-gates",
            "APIResponseCompression=false",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        let s = scenario(&args).unwrap();
        assert_eq!(
            format!("{:?}", args.kube_version),
            "Some(KubeVersion { minor: 31 })"
        );
        assert!(args.runtime_config.unwrap().service_cidr_beta);
        assert_eq!(
            args.request_log.as_deref(),
            Some(std::path::Path::new("/tmp/log.jsonl"))
        );
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("AfterPages(2)")
                && dbg.contains("300ms")
                && dbg.contains("\"alice\"")
                && dbg.contains("impersonators: [\"bob\"]")
                && dbg.contains("response_compression_off: true"),
            "{dbg}"
        );
    }
}
