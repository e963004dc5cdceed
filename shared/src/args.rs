//! Every verb's command-line flags, in one place, so the binaries, the dispatcher's help and
//! shell completion all read the same tree.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

use crate::flags::{CommonArgs, KubeArgs, MutateArgs, OutputFormat};
use crate::istio::Era;

/// The verbs, with the one line `kubectl meshvm` prints for each.
pub const VERBS: [(&str, &str); 4] = [
    (
        "prepare",
        "Cluster side: validated cacerts, VM namespace, ServiceAccount, WorkloadGroup",
    ),
    (
        "bundle",
        "Everything the VM needs, as a directory and a deterministic .tar.gz with install.sh",
    ),
    (
        "register",
        "Make the VM an endpoint (Service + Endpoints, or WorkloadEntry); --deregister undoes it",
    ),
    (
        "doctor",
        "Pre-flight checks before STRICT mTLS: cluster, manifest files (-f) or a VM bundle",
    ),
];

/// Where to read the plugged-in CA from.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_help_heading = "Plugged-in CA")]
pub struct CaArgs {
    /// Directory holding ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem
    #[arg(long, value_name = "DIR", conflicts_with_all = ["ca_cert", "ca_key", "root_cert", "cert_chain"])]
    pub ca_dir: Option<PathBuf>,
    /// The signing CA certificate (ca-cert.pem)
    #[arg(long, value_name = "FILE", requires_all = ["ca_key", "root_cert", "cert_chain"])]
    pub ca_cert: Option<PathBuf>,
    /// The signing CA's private key (ca-key.pem)
    #[arg(long, value_name = "FILE", requires_all = ["ca_cert", "root_cert", "cert_chain"])]
    pub ca_key: Option<PathBuf>,
    /// The root certificate every cluster of the mesh shares (root-cert.pem)
    #[arg(long, value_name = "FILE", requires_all = ["ca_cert", "ca_key", "cert_chain"])]
    pub root_cert: Option<PathBuf>,
    /// The chain from the signing CA up to the root (cert-chain.pem)
    #[arg(long, value_name = "FILE", requires_all = ["ca_cert", "ca_key", "root_cert"])]
    pub cert_chain: Option<PathBuf>,
    /// Warn when a certificate expires within this many days
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub expiry_warning_days: u32,
}

/// `kubectl meshvm prepare`: the cluster side of adding a VM.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "kubectl-meshvm-prepare",
    bin_name = "kubectl meshvm prepare",
    version,
    about = "Prepare the cluster for a VM: validated cacerts, VM namespace, ServiceAccount, WorkloadGroup",
    after_help = "The VM's namespace is -n (created when absent); without -n, the kubeconfig context's namespace, as kubectl.\n\nExamples:\n  kubectl meshvm prepare -n expandvm --ca-dir samples/certs\n  kubectl meshvm prepare -n vm --workload-group vm --labels app=vm --ports http=8080 --network vm-net\n  kubectl meshvm prepare -n expandvm --restart-control-plane --yes\n  kubectl meshvm prepare --delete -n expandvm --expose httpbin.bar --yes\n  kubectl meshvm prepare --delete -n expandvm --yes"
)]
pub struct PrepareArgs {
    /// Older name of -n: the namespace the VM's workload lives in
    #[arg(long, value_name = "NS")]
    pub vm_namespace: Option<String>,
    /// ServiceAccount of the VM (default: the one prepare made before in the namespace, else the namespace's name, as in the runbook); also the WorkloadGroup's template.serviceAccount, where istioctl defaults to "default"
    #[arg(short = 's', long, value_name = "SA")]
    pub service_account: Option<String>,
    /// The CA files (`--ca-dir` or the four files).
    #[command(flatten)]
    pub ca: CaArgs,
    /// Namespace of the Istio control plane
    #[arg(long, value_name = "NS", default_value = crate::istio::DEFAULT_ISTIO_NAMESPACE)]
    pub istio_namespace: String,
    /// Use this era instead of detecting it from the cluster
    #[arg(long, value_enum)]
    pub era: Option<Era>,
    /// Replace an existing cacerts that differs (rotates the mesh's root: every workload needs new certificates); with --delete, delete a namespace prepare did not make
    #[arg(long)]
    pub force: bool,
    /// Restart the CA (istio-citadel or istiod) as `kubectl rollout restart` does when cacerts is newer than its start (needs no CA files)
    #[arg(long)]
    pub restart_control_plane: bool,
    /// With --restart-control-plane: how long to wait for the rollout to finish (default 5m; 0 waits without limit)
    #[arg(long, value_name = "DURATION", value_parser = crate::flags::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Create this WorkloadGroup (modern era)
    #[arg(long, value_name = "NAME", help_heading = "WorkloadGroup (modern era)")]
    pub workload_group: Option<String>,
    /// Labels of the WorkloadGroup's template: k=v,k=v
    #[arg(
        long,
        value_name = "K=V,...",
        value_delimiter = ',',
        help_heading = "WorkloadGroup (modern era)"
    )]
    pub labels: Vec<String>,
    /// Annotations of the WorkloadGroup's template: k=v,k=v
    #[arg(
        long,
        value_name = "K=V,...",
        value_delimiter = ',',
        help_heading = "WorkloadGroup (modern era)"
    )]
    pub annotations: Vec<String>,
    /// Named ports of the WorkloadGroup's template: name=port,name=port
    #[arg(
        long,
        value_name = "NAME=PORT,...",
        value_delimiter = ',',
        help_heading = "WorkloadGroup (modern era)"
    )]
    pub ports: Vec<String>,
    /// Network of the VM (multi-network meshes)
    #[arg(long, value_name = "NET", help_heading = "WorkloadGroup (modern era)")]
    pub network: Option<String>,
    /// Load-balancing weight of the WorkloadGroup's entries (as istioctl's --weight)
    #[arg(long, value_name = "N", help_heading = "WorkloadGroup (modern era)")]
    pub weight: Option<u32>,
    /// Cluster Services the VM calls, as SVC.NS (repeatable, or comma-separated): legacy, one `<svc>.<ns>.global` ServiceEntry each through the gateway's 15443; modern, checks the east-west gateway's cross-network path
    #[arg(long, value_name = "SVC.NS,...", value_delimiter = ',')]
    pub expose: Vec<String>,
    /// Remove what prepare made for this VM: its namespace and everything in it; with --expose, only the ServiceEntries --expose made for those Services
    #[arg(long)]
    pub delete: bool,
    /// With --delete: also delete the mesh-wide cacerts secret
    #[arg(long, requires = "delete")]
    pub include_ca: bool,
    /// Print Secret data instead of redacting it in -o json|yaml
    #[arg(long)]
    pub show_secrets: bool,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// `--dry-run` and `--yes`.
    #[command(flatten)]
    pub mutate: MutateArgs,
    /// kubectl's connection flags.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// `-v` verbosity.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the least-privilege ClusterRole and Roles (meshvm-prepare) this verb needs, as YAML for `kubectl apply -f -`, and exit (no cluster is contacted)
    #[arg(long)]
    pub print_rbac: bool,
}

/// `kubectl meshvm bundle`: the files the VM needs.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "kubectl-meshvm-bundle",
    bin_name = "kubectl meshvm bundle",
    version,
    about = "Write everything the VM needs into a directory (and a deterministic .tar.gz), with install.sh",
    after_help = "Examples:\n  # legacy (Citadel): the ports the VM serves are needed, as the runbook's ISTIO_INBOUND_PORTS\n  kubectl meshvm bundle -n expandvm --inbound-ports 80 -d expandvm --archive expandvm.tar.gz\n  # modern (istiod): the WorkloadGroup `prepare --workload-group` made\n  kubectl meshvm bundle -n expandvm --workload-group expandvm --internal-ip 10.0.0.5 -d expandvm --archive expandvm.tar.gz\n\nThe archive unpacks into one folder named as the -d directory (expandvm/ above): on the VM,\n`tar xzf expandvm.tar.gz && cd expandvm && sudo ./install.sh` (or `sudo ./expandvm/install.sh`)."
)]
pub struct BundleArgs {
    /// Older name of -n: the namespace of the VM's workload
    #[arg(long, value_name = "NS")]
    pub vm_namespace: Option<String>,
    /// ServiceAccount of the VM (default: the WorkloadGroup's, else the one prepare made in the namespace, else the namespace's name)
    #[arg(short = 's', long, value_name = "SA")]
    pub service_account: Option<String>,
    /// Directory to write the files into (created 0700; a folder of its own: not the current directory, its parents, / or $HOME)
    #[arg(
        short = 'd',
        long,
        value_name = "DIR",
        required_unless_present = "print_rbac"
    )]
    pub output_dir: Option<PathBuf>,
    /// Also write a deterministic .tar.gz of the directory, unpacking into one folder named as the directory
    #[arg(long, value_name = "FILE.tar.gz")]
    pub archive: Option<PathBuf>,
    /// Gateway Service the VM reaches the control plane through: NAME or NAME.NAMESPACE
    #[arg(long, value_name = "NAME[.NS]")]
    pub gateway_service: Option<String>,
    /// Use this gateway address instead of the Service's
    #[arg(long, value_name = "IP", conflicts_with = "gateway_service")]
    pub gateway_ip: Option<String>,
    /// The VM reaches istiod without a gateway (same network, own DNS): write an empty hosts file (modern era)
    #[arg(long, conflicts_with_all = ["gateway_ip", "gateway_service"])]
    pub no_gateway: bool,
    /// Service the VM is an endpoint of: ISTIO_SERVICE in the legacy era (default: the ServiceAccount's name)
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// The cluster's Service CIDR, legacy ISTIO_SERVICE_CIDR (default: the ServiceCIDR API, else the API server's refusal of an out-of-range ClusterIP, else a guess; the output says which)
    #[arg(long, value_name = "CIDR")]
    pub service_cidr: Option<String>,
    /// Legacy era: wait this long for Citadel to issue istio.<sa> from the root in cacerts (0 = do not wait)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::flags::parse_duration)]
    pub wait: std::time::Duration,
    /// Ports the VM's workload serves, captured by the sidecar (legacy: required; modern: default the WorkloadGroup's ports, with a warning when they differ)
    #[arg(long, value_name = "PORT,...", value_delimiter = ',')]
    pub inbound_ports: Vec<u16>,
    /// Lifetime of the bootstrap token (modern era)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::flags::parse_duration)]
    pub token_duration: std::time::Duration,
    /// WorkloadGroup the VM belongs to (modern era)
    #[arg(long, value_name = "NAME")]
    pub workload_group: Option<String>,
    /// The VM's own IP (modern era: ISTIO_SVC_IP)
    #[arg(long, value_name = "IP")]
    pub internal_ip: Option<String>,
    /// Cluster ID (modern era; default: from istio-sidecar-injector)
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Control plane revision (modern era)
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Namespace of the Istio control plane
    #[arg(long, value_name = "NS", default_value = crate::istio::DEFAULT_ISTIO_NAMESPACE)]
    pub istio_namespace: String,
    /// Use this era instead of detecting it from the cluster
    #[arg(long, value_enum)]
    pub era: Option<Era>,
    /// Replace a different bundle in --output-dir (and --archive), listing the files it removes; a directory holding anything else is never touched (without --force, the same bundle again is left unchanged)
    #[arg(long)]
    pub force: bool,
    /// Re-issue only the credentials of the bundle in --output-dir (legacy: key.pem, cert-chain.pem, root-cert.pem from istio.<sa>; modern: istio-token, root-cert.pem), leaving its other files as they are; then run `sudo ./install.sh --renew` on the VM
    #[arg(long, conflicts_with_all = ["gateway_service", "gateway_ip", "no_gateway", "service", "service_cidr", "inbound_ports", "workload_group", "internal_ip", "cluster_id", "revision", "force"])]
    pub renew: bool,
    /// Output format of the summary
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// kubectl's connection flags.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// `-v` verbosity.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the least-privilege ClusterRole and Roles (meshvm-bundle) this verb needs, as YAML for `kubectl apply -f -`, and exit (no cluster is contacted)
    #[arg(long)]
    pub print_rbac: bool,
}

/// `kubectl meshvm register`: make the VM an endpoint.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "kubectl-meshvm-register",
    bin_name = "kubectl meshvm register",
    version,
    about = "Register a VM as an endpoint of a Service (legacy) or as a WorkloadEntry (modern); --deregister undoes it",
    after_help = "Examples:\n  kubectl meshvm register expandvm 203.0.113.7 80 -n expandvm -s expandvm\n  kubectl meshvm register --deregister expandvm 203.0.113.7 -n expandvm\n  kubectl meshvm register --workload-entry vm-1 --address 10.0.0.5 -n vm --workload-group vm --service vm"
)]
pub struct RegisterArgs {
    /// Legacy form: SERVICE IP [NAME:]PORT...
    #[arg(value_name = "SERVICE IP [NAME:]PORT")]
    pub words: Vec<String>,
    /// ServiceAccount the VM runs as (default: the WorkloadGroup's, else the one prepare made in the namespace, else the namespace's name)
    #[arg(short = 's', long, value_name = "SA")]
    pub service_account: Option<String>,
    /// Labels to set: k=v, repeatable or comma-separated (as istioctl's -l)
    #[arg(
        short = 'l',
        long = "labels",
        value_name = "K=V,...",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// Annotation to set, k=v (repeatable; not split at commas, values may hold them)
    #[arg(short = 'a', long = "annotations", value_name = "K=V")]
    pub annotations: Vec<String>,
    /// Change an existing Service that lacks the ports (or the labels, annotations, ServiceAccount)
    #[arg(long)]
    pub update_service: bool,
    /// Remove the IP instead of adding it
    #[arg(long)]
    pub deregister: bool,
    /// Legacy form as istioctl 1.4's `x add-to-mesh external-service`: ServiceEntry mesh-expansion-SERVICE (IP may be IP,IP,...) plus a selector-less Service
    #[arg(long)]
    pub service_entry: bool,
    /// Delete WorkloadEntries sharing an address and network (the newest stays), auto-registered ones unhealthy longer than --stale-after, and Endpoints addresses listed twice, in -n NS
    #[arg(long, help_heading = "Prune")]
    pub prune: bool,
    /// With --prune: how long an auto-registered WorkloadEntry must have been unhealthy to count as stale
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::flags::parse_duration, help_heading = "Prune")]
    pub stale_after: std::time::Duration,
    /// Modern form: the WorkloadEntry's name
    #[arg(long, value_name = "NAME", help_heading = "WorkloadEntry (modern era)")]
    pub workload_entry: Option<String>,
    /// The VM's address
    #[arg(long, value_name = "IP", help_heading = "WorkloadEntry (modern era)")]
    pub address: Option<String>,
    /// Network of the VM
    #[arg(long, value_name = "NET", help_heading = "WorkloadEntry (modern era)")]
    pub network: Option<String>,
    /// Named ports: name=port,name=port
    #[arg(
        long,
        value_name = "NAME=PORT,...",
        value_delimiter = ',',
        help_heading = "WorkloadEntry (modern era)"
    )]
    pub ports: Vec<String>,
    /// Ensure this Service selects the entry
    #[arg(long, value_name = "SVC", help_heading = "WorkloadEntry (modern era)")]
    pub service: Option<String>,
    /// Take labels and ServiceAccount from this WorkloadGroup
    #[arg(long, value_name = "NAME", help_heading = "WorkloadEntry (modern era)")]
    pub workload_group: Option<String>,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// `--dry-run` and `--yes`.
    #[command(flatten)]
    pub mutate: MutateArgs,
    /// kubectl's connection flags.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// `-v` verbosity.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the least-privilege ClusterRole and Roles (meshvm-register) this verb needs, as YAML for `kubectl apply -f -`, and exit (no cluster is contacted)
    #[arg(long)]
    pub print_rbac: bool,
}

/// Doctor's `-o`: the common formats plus SARIF for CI systems.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DoctorOutput {
    /// A human-readable table
    #[default]
    Table,
    /// JSON
    Json,
    /// YAML
    Yaml,
    /// SARIF 2.1.0, with file and line for -f sources
    Sarif,
}

/// Which severity makes doctor exit 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Only failures
    #[default]
    Fail,
    /// Warnings too
    Warn,
}

/// `kubectl meshvm doctor`: what breaks if STRICT mTLS is turned on now.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "kubectl-meshvm-doctor",
    bin_name = "kubectl meshvm doctor",
    version,
    about = "Pre-flight checks before STRICT mTLS: DestinationRules, PeerAuthentications, gateways, certificates, registered VMs",
    after_help = "Examples:\n  kubectl meshvm doctor\n  kubectl meshvm doctor --context east --context west\n  kubectl meshvm doctor -f manifests/ -R -o sarif > doctor.sarif\n  kubectl get destinationrules -A -o yaml | kubectl meshvm doctor -f -\n  kubectl meshvm doctor --bundle expandvm.tar.gz\n  kubectl meshvm doctor --context prod --bundle expandvm.tar.gz\n  kubectl meshvm doctor --fix --dry-run=server\n  kubectl meshvm doctor --fix --yes\n  kubectl meshvm doctor --fix --strict --dry-run=client -o yaml > strict.yaml\n  kubectl meshvm doctor --fix --strict -n sample,default --undo-file undo.json --yes && kubectl meshvm doctor --fix --undo undo.json --yes\n  kubectl meshvm doctor --fix --strict --wait --timeout 2m --undo-file undo.json --yes\n  kubectl meshvm doctor --prometheus http://prometheus.istio-system:9090 --window 7d"
)]
pub struct DoctorArgs {
    /// Check manifest files instead of a cluster (file, directory, or - for standard input; repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub filename: Vec<PathBuf>,
    /// Read -f directories' subdirectories too, as kubectl -R
    #[arg(short = 'R', long, requires = "filename")]
    pub recursive: bool,
    /// Check a VM bundle (directory or .tar.gz): alone, or cross-checked against the cluster of --context
    #[arg(long, value_name = "DIR|FILE.tar.gz")]
    pub bundle: Option<PathBuf>,
    /// Override auto mTLS (default: the mesh config's enableAutoMtls)
    #[arg(long, value_name = "BOOL")]
    pub auto_mtls: Option<bool>,
    /// Namespace of the Istio control plane
    #[arg(long, value_name = "NS", default_value = crate::istio::DEFAULT_ISTIO_NAMESPACE)]
    pub istio_namespace: String,
    /// Exit 1 on failures only, or on warnings too
    #[arg(long, value_enum, default_value = "fail")]
    pub fail_on: FailOn,
    /// Show, then create after confirmation, only DestinationRules no object of that name holds: the runbook's Gotchas (and the api-server rule Istio pairs with the mesh-wide one)
    #[arg(long)]
    pub fix: bool,
    /// With --fix: make STRICT only the namespaces the readiness table marks ready (Istio 1.4: namespace Policy default with peers [{mtls: {}}], and the MeshPolicy once every namespace is ready; later: PeerAuthentication default, mtls.mode STRICT); blocked ones are listed and left alone; -n NS[,NS...] limits it; -o yaml with --dry-run=client prints the manifests only
    #[arg(long, requires = "fix")]
    pub strict: bool,
    /// With --strict: first write (mode 0600, a new file) what restores the state before it, then the uid and resourceVersion of each object it writes, for --fix --undo FILE
    #[arg(long, value_name = "FILE", requires = "strict")]
    pub undo_file: Option<PathBuf>,
    /// With --strict: after each namespace, before the next, wait until a fresh run of the checks (and, with --prometheus, no plaintext into it since its policy was written, after two scrape intervals) shows it still healthy; else stop there, exit 1, and say how to undo (needs --undo-file; not with --dry-run)
    #[arg(long, requires_all = ["strict", "undo_file"])]
    pub wait: bool,
    /// With --wait: how long to wait for each namespace (default 5m; 0 waits without limit)
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = crate::flags::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// With --fix: restore what an --undo-file recorded: delete the policies --strict created, put back those it replaced, each only while it is still as --strict wrote it (others are named and left alone, exit 1)
    #[arg(long, value_name = "FILE", requires = "fix", conflicts_with_all = ["strict", "prometheus", "bundle", "filename"])]
    pub undo: Option<PathBuf>,
    /// --fix's --dry-run (none, client, server) and --yes (answer the confirmation).
    #[command(flatten)]
    pub mutate: MutateArgs,
    /// Warn when a certificate expires within this many days
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub expiry_warning_days: u32,
    /// Ask this Prometheus who sent plaintext into in-mesh workloads in the window (istio_requests_total, istio_tcp_connections_opened_total)
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// How far back --prometheus looks (a Prometheus duration: 30m, 24h, 7d) [default: 24h]
    #[arg(long, value_name = "DURATION", requires = "prometheus")]
    pub window: Option<String>,
    /// A header for --prometheus, NAME: VALUE; @FILE in the value is the file's content, never printed (repeatable)
    #[arg(long, value_name = "NAME: VALUE", requires = "prometheus")]
    pub prometheus_header: Vec<String>,
    /// PEM CA certificates to trust for an https:// --prometheus (default: the system's)
    #[arg(long, value_name = "FILE", requires = "prometheus")]
    pub prometheus_ca: Option<PathBuf>,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: DoctorOutput,
    /// kubectl's connection flags.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// `-v` verbosity.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the least-privilege ClusterRole and Roles (meshvm-doctor) this verb needs, as YAML for `kubectl apply -f -`, and exit (no cluster is contacted)
    #[arg(long)]
    pub print_rbac: bool,
}

/// The whole `kubectl meshvm` tree, for completion and the dispatcher's help.
pub fn command_tree() -> clap::Command {
    use clap::CommandFactory;
    clap::Command::new("meshvm")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Add VMs to an Istio mesh")
        .disable_help_subcommand(true)
        .subcommand(PrepareArgs::command().name("prepare"))
        .subcommand(BundleArgs::command().name("bundle"))
        .subcommand(RegisterArgs::command().name("register"))
        .subcommand(DoctorArgs::command().name("doctor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        PrepareArgs::command().debug_assert();
        BundleArgs::command().debug_assert();
        RegisterArgs::command().debug_assert();
        DoctorArgs::command().debug_assert();
        command_tree().debug_assert();
    }

    #[test]
    fn bundle_needs_a_folder_unless_it_prints_its_role() {
        assert!(BundleArgs::try_parse_from(["x", "--print-rbac", "-n", "vm"]).is_ok());
        let err = BundleArgs::try_parse_from(["x", "-n", "vm"]).unwrap_err();
        assert!(err.to_string().contains("--output-dir"), "{err}");
    }

    #[test]
    fn verbs_match_the_tree() {
        let tree = command_tree();
        let names: Vec<_> = tree
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let verbs: Vec<_> = VERBS.iter().map(|(v, _)| (*v).to_owned()).collect();
        assert_eq!(names, verbs);
    }

    #[test]
    fn ca_files_come_all_together_or_as_a_dir() {
        let base = ["x", "-n", "vm"];
        assert!(PrepareArgs::try_parse_from(base).is_ok());
        let mut only_cert = base.to_vec();
        only_cert.extend(["--ca-cert", "a.pem"]);
        assert!(PrepareArgs::try_parse_from(only_cert).is_err());
        let mut dir_and_file = base.to_vec();
        dir_and_file.extend(["--ca-dir", "d", "--ca-key", "k"]);
        assert!(PrepareArgs::try_parse_from(dir_and_file).is_err());
    }

    #[test]
    fn doctor_takes_several_contexts() {
        let d = DoctorArgs::parse_from(["x", "--context", "a", "--context", "b", "-o", "sarif"]);
        assert_eq!(d.kube.context, ["a", "b"]);
        assert_eq!(d.output, DoctorOutput::Sarif);
    }
}
