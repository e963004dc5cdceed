//! `kube-sim serve`: runs the simulated API server until SIGINT/SIGTERM.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube_sim::{Fault, FaultKind, Scenario, Server, ServerOptions};

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
    /// Kubernetes version to serve (kubectl's dispatcher picks kubectl.1.NN from it); default:
    /// the scenario's `kubeVersion`, else 1.32.
    #[arg(long, value_name = "1.NN", value_parser = kube_version)]
    kube_version: Option<String>,
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

/// Clap parser: a `1.NN` Kubernetes version.
fn kube_version(s: &str) -> Result<String, String> {
    kube_sim::scenario::parse_minor(s)
        .map(|_| s.to_string())
        .ok_or_else(|| format!("{s:?} is not of the form 1.NN (e.g. 1.32)"))
}

fn scenario(args: &ServeArgs) -> Result<Scenario, String> {
    let mut s = Scenario::from_files(&args.scenarios).map_err(|e| format!("{e}"))?;
    if let Some(set) = &args.crds {
        s = s.with_crds(set);
    }
    if let Some(v) = &args.kube_version {
        s = s.with_kube_version(v);
    }
    s = s
        .with_latency(Duration::from_millis(args.latency_ms))
        .with_seed(args.seed);
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
    }
}
