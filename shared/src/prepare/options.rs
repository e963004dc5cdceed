//! `prepare`'s flags resolved into validated options: pure, so every usage error is found before any IO.

use crate::names::{self, PairKind, parse_pairs};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::args::PrepareArgs;
use crate::errors::UsageError;
use crate::flags::{DryRun, KubeArgs, OutputFormat};
use crate::istio::Era;
use crate::pki::CaPaths;

/// The WorkloadGroup to create, with the fields `istioctl x workload group create` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadGroupOptions {
    /// `metadata.name`.
    pub name: String,
    /// `spec.metadata.labels` (istioctl `--labels`).
    pub labels: BTreeMap<String, String>,
    /// `spec.metadata.annotations` (istioctl `--annotations`).
    pub annotations: BTreeMap<String, String>,
    /// `spec.template.ports` (istioctl `--ports`).
    pub ports: BTreeMap<String, u32>,
    /// `spec.template.network`.
    pub network: Option<String>,
    /// `spec.template.weight` (istioctl `--weight`).
    pub weight: Option<u32>,
}

/// What `prepare` was asked to do, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The VM's namespace (`-n`, else the context's: [`crate::kube::resolve_namespace`]).
    pub vm_namespace: String,
    /// Where [`Self::vm_namespace`] came from.
    pub namespace_source: crate::kube::NamespaceSource,
    /// `-s`; without it the account is settled against the cluster ([`crate::scope::service_account`]).
    pub service_account: Option<String>,
    /// The Istio control plane's namespace (where `cacerts` lives).
    pub istio_namespace: String,
    /// `--era`: use this era instead of detecting it.
    pub era: Option<Era>,
    /// Where the plugged-in CA files are; `None` leaves `cacerts` alone.
    pub ca: Option<CaPaths>,
    /// Certificates expiring within this earn a warning.
    pub warn_within: Duration,
    /// Replace a different `cacerts` (prepare) or delete a namespace meshvm did not make (--delete).
    pub force: bool,
    /// Restart the CA Deployment after `cacerts` changed.
    pub restart_control_plane: bool,
    /// How long to wait for that restart to roll out (zero: no limit).
    pub timeout: Duration,
    /// The WorkloadGroup to create (modern era).
    pub workload_group: Option<WorkloadGroupOptions>,
    /// `--expose`: the cluster Services the VM calls, deduplicated, in order.
    pub expose: Vec<super::expose::Exposed>,
    /// `--delete`: remove what prepare made instead.
    pub delete: bool,
    /// With `--delete`: the mesh-wide `cacerts` too.
    pub include_ca: bool,
    /// Print Secret data in `-o json|yaml`.
    pub show_secrets: bool,
    /// `-o`.
    pub output: OutputFormat,
    /// `--dry-run`.
    pub dry_run: DryRun,
    /// `--yes`.
    pub yes: bool,
    /// `--context`, when given.
    pub context: Option<String>,
    /// The connection flags.
    pub kube: KubeArgs,
}

/// How long `--restart-control-plane` waits for the rollout unless `--timeout` says otherwise.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);

/// Namespaces `--delete` never removes: the cluster's own.
pub const PROTECTED_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

impl Options {
    /// Validate the flags and fill defaults; every problem is a usage error (exit 2).
    pub fn resolve(args: PrepareArgs) -> Result<Self, UsageError> {
        let context = args.kube.single_context()?.map(str::to_owned);
        let mut kube = args.kube.clone();
        kube.namespace = kube.namespace_flag("--vm-namespace", args.vm_namespace.as_deref())?;
        if let Some(ns) = &kube.namespace {
            let flag = if args.kube.namespace.is_some() {
                "-n"
            } else {
                "--vm-namespace"
            };
            check_dns_label(flag, ns)?;
        }
        let namespace = crate::kube::resolve_namespace(&kube, context.as_deref())
            // An unreadable kubeconfig is reported by the connection that follows.
            .unwrap_or_else(|_| crate::kube::VerbNamespace::flag("default"));
        let vm_namespace = namespace.name.clone();
        check_dns_label("--istio-namespace", &args.istio_namespace)?;
        if vm_namespace == args.istio_namespace {
            return Err(UsageError::new(
                format!(
                    "-n {vm_namespace} is the Istio namespace{}",
                    if namespace.source == crate::kube::NamespaceSource::Flag {
                        String::new()
                    } else {
                        format!(" ({})", namespace.why())
                    }
                ),
                Some("give the VM a namespace of its own, e.g. -n expandvm"),
            ));
        }
        if let Some(sa) = &args.service_account {
            check_dns_subdomain("--service-account", sa)?;
        }

        let ca = match (&args.ca.ca_dir, &args.ca.ca_cert) {
            (Some(dir), _) => Some(CaPaths::from_dir(dir)),
            (None, Some(ca_cert)) => Some(CaPaths {
                ca_cert: ca_cert.clone(),
                ca_key: required(args.ca.ca_key.as_ref()),
                root_cert: required(args.ca.root_cert.as_ref()),
                cert_chain: required(args.ca.cert_chain.as_ref()),
            }),
            (None, None) => None,
        };

        let wg_flags_given = !args.labels.is_empty()
            || !args.annotations.is_empty()
            || !args.ports.is_empty()
            || args.network.is_some()
            || args.weight.is_some();
        let workload_group = match &args.workload_group {
            Some(name) => {
                check_dns_subdomain("--workload-group", name)?;
                Some(WorkloadGroupOptions {
                    name: name.clone(),
                    labels: metadata_pairs(&args.labels, PairKind::Label)?,
                    annotations: metadata_pairs(&args.annotations, PairKind::Annotation)?,
                    ports: ports(&args.ports)?,
                    network: args.network.clone().filter(|n| !n.is_empty()),
                    weight: args.weight,
                })
            }
            None if wg_flags_given => {
                return Err(UsageError::new(
                    "--labels, --annotations, --ports, --network and --weight describe a WorkloadGroup, but --workload-group was not given",
                    Some("add --workload-group NAME (modern era)"),
                ));
            }
            None => None,
        };
        if workload_group.is_some() && args.era == Some(Era::Legacy) {
            return Err(UsageError::new(
                "--workload-group needs the modern era (istiod), but --era legacy was given",
                Some("drop --workload-group for Istio 1.4, or use --era modern"),
            ));
        }

        let expose = super::expose::parse_all(&args.expose)?;
        if args.delete {
            let mut extra = Vec::new();
            if !expose.is_empty() && args.include_ca {
                // --delete --expose removes only those ServiceEntries; cacerts is mesh-wide.
                extra.push("--include-ca together with --expose");
            }
            if ca.is_some() {
                extra.push("the CA files");
            }
            if workload_group.is_some() {
                extra.push("--workload-group");
            }
            if args.restart_control_plane {
                extra.push("--restart-control-plane");
            }
            if args.timeout.is_some() {
                extra.push("--timeout");
            }
            if !extra.is_empty() {
                return Err(UsageError::new(
                    format!("--delete does not take {}", extra.join(", ")),
                    Some(
                        "run `kubectl meshvm prepare --delete -n NS` (add --include-ca to delete cacerts too, or --expose SVC.NS to remove only what --expose made for those Services)",
                    ),
                ));
            }
            // With --expose only those ServiceEntries go, never the namespace.
            if expose.is_empty() && PROTECTED_NAMESPACES.contains(&vm_namespace.as_str()) {
                return Err(UsageError::new(
                    format!(
                        "--delete refuses to delete namespace {vm_namespace} ({}): it belongs to the cluster",
                        namespace.why()
                    ),
                    Some("name the VM's namespace with -n NS"),
                ));
            }
        } else {
            if args.timeout.is_some() && !args.restart_control_plane {
                return Err(UsageError::new(
                    "--timeout is how long --restart-control-plane waits for the rollout, but --restart-control-plane was not given",
                    Some("add --restart-control-plane, or drop --timeout"),
                ));
            }
            if args.force && ca.is_none() {
                return Err(UsageError::new(
                    "--force replaces a different cacerts, but no CA files were given",
                    Some("add --ca-dir DIR, or drop --force"),
                ));
            }
        }

        Ok(Self {
            vm_namespace,
            namespace_source: namespace.source,
            service_account: args.service_account,
            istio_namespace: args.istio_namespace,
            era: args.era,
            ca,
            warn_within: Duration::from_secs(u64::from(args.ca.expiry_warning_days) * 86_400),
            force: args.force,
            restart_control_plane: args.restart_control_plane,
            timeout: args.timeout.unwrap_or(DEFAULT_ROLLOUT_TIMEOUT),
            workload_group,
            expose,
            delete: args.delete,
            include_ca: args.include_ca,
            show_secrets: args.show_secrets,
            output: args.output,
            dry_run: args.mutate.dry_run,
            yes: args.mutate.yes,
            context,
            kube,
        })
    }
}

/// clap's `requires_all` guarantees the other three CA flags come with `--ca-cert`.
fn required(path: Option<&PathBuf>) -> PathBuf {
    path.cloned().unwrap_or_default()
}

fn check_dns_label(flag: &str, value: &str) -> Result<(), UsageError> {
    names::flag_name(flag, value, names::dns1123_label).map_err(|m| UsageError::new(m, None))
}

fn check_dns_subdomain(flag: &str, value: &str) -> Result<(), UsageError> {
    names::flag_name(flag, value, names::dns1123_subdomain).map_err(|m| UsageError::new(m, None))
}

/// Labels or annotations, with Kubernetes' key and (label) value rules — the same checks
/// `register -l/-a` makes, so a value one verb refuses the other refuses too.
fn metadata_pairs(
    items: &[String],
    kind: PairKind,
) -> Result<BTreeMap<String, String>, UsageError> {
    parse_pairs(items, kind).map_err(|problem| {
        UsageError::new(
            problem,
            Some("write them as k=v,k2=v2 (keys like app or example.com/app)"),
        )
    })
}

/// `name=port` pairs, as istioctl's `--ports` takes them: the same parser (and messages) as
/// register's modern `--ports`, which refuses a name or a port given twice.
fn ports(items: &[String]) -> Result<BTreeMap<String, u32>, UsageError> {
    let items: Vec<&String> = items.iter().filter(|i| !i.is_empty()).collect();
    names::parse_named_ports(&items)
        .map(|ports| {
            ports
                .into_iter()
                .map(|p| (p.name, u32::from(p.port)))
                .collect()
        })
        .map_err(|m| UsageError::new(m, Some("write them as name=port, e.g. http=8080,grpc=3550")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(extra: &[&str]) -> Result<Options, UsageError> {
        let mut argv = vec!["prepare"];
        argv.extend_from_slice(extra);
        Options::resolve(PrepareArgs::try_parse_from(argv).expect("flags parse"))
    }

    #[test]
    fn service_account_defaults_to_the_vm_namespace() {
        let o = resolve(&["--vm-namespace", "expandvm"]).unwrap();
        assert_eq!(o.service_account, None, "settled against the cluster");
        assert_eq!(o.vm_namespace, "expandvm");
        assert_eq!(o.istio_namespace, "istio-system");
        assert!(o.ca.is_none() && o.workload_group.is_none());
        let o = resolve(&["--vm-namespace", "vm", "-s", "vm-sa", "--ca-dir", "certs"]).unwrap();
        assert_eq!(o.service_account.as_deref(), Some("vm-sa"));
        assert_eq!(
            o.ca.unwrap().ca_key,
            std::path::Path::new("certs/ca-key.pem")
        );
        assert_eq!(o.warn_within, Duration::from_secs(30 * 86_400));
        assert_eq!(o.timeout, DEFAULT_ROLLOUT_TIMEOUT);
        let o = resolve(&[
            "--vm-namespace",
            "vm",
            "--ca-dir",
            "certs",
            "--restart-control-plane",
            "--timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(o.timeout, Duration::from_secs(90));
    }

    #[test]
    fn the_namespace_is_n_or_its_older_name_else_the_contexts() {
        use crate::kube::NamespaceSource;
        for argv in [
            &["-n", "expandvm"][..],
            &["--vm-namespace", "expandvm"],
            &["-n", "expandvm", "--vm-namespace", "expandvm"],
            &["--namespace", "expandvm"],
        ] {
            let o = resolve(argv).unwrap();
            assert_eq!(o.vm_namespace, "expandvm", "{argv:?}");
            assert_eq!(o.namespace_source, NamespaceSource::Flag);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let kubeconfig = |ns: &str| {
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: east\n  context:\n    cluster: c\n    user: u\n{ns}current-context: east\n"
            )
        };
        std::fs::write(&path, kubeconfig("    namespace: vm-east\n")).unwrap();
        let kc = path.to_str().unwrap();
        let o = resolve(&["--kubeconfig", kc]).unwrap();
        assert_eq!(o.vm_namespace, "vm-east");
        assert_eq!(o.namespace_source, NamespaceSource::Context("east".into()));
        assert_eq!(o.kube.namespace, None, "the context's, not a flag's");
        std::fs::write(&path, kubeconfig("")).unwrap();
        let o = resolve(&["--kubeconfig", kc]).unwrap();
        assert_eq!(o.vm_namespace, "default", "kubectl's default");
        assert_eq!(o.namespace_source, NamespaceSource::Default("east".into()));
        let err = resolve(&["--kubeconfig", kc, "--delete"]).unwrap_err();
        assert!(
            err.message
                .contains("namespace default (kubectl's default: context east sets no namespace)"),
            "{err}"
        );
    }

    #[test]
    fn a_port_name_given_twice_is_refused_not_overwritten() {
        let e = resolve(&[
            "--vm-namespace",
            "bar",
            "--workload-group",
            "foo",
            "--ports",
            "http=80,http=81",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn workload_group_flags_parse_like_istioctl() {
        let o = resolve(&[
            "--vm-namespace",
            "bar",
            "--workload-group",
            "foo",
            "--labels",
            "app=foo,bar=baz",
            "--annotations",
            "annotation=foobar",
            "--ports",
            "grpc=3550,http=8080",
            "--weight",
            "100",
            "--network",
            "vm-net",
        ])
        .unwrap();
        let wg = o.workload_group.unwrap();
        assert_eq!(wg.labels.len(), 2);
        assert_eq!(wg.ports["grpc"], 3550);
        assert_eq!(wg.weight, Some(100));
        assert_eq!(wg.network.as_deref(), Some("vm-net"));
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let cases: [(&[&str], &str); 12] = [
            (&["-n", "vm", "--expose", "httpbin"], "--expose \"httpbin\""),
            (
                &["-n", "vm", "--delete", "--expose", "a.b", "--include-ca"],
                "--delete does not take --include-ca together with --expose",
            ),
            (
                &["--vm-namespace", "vm", "--ca-dir", "d", "--timeout", "1m"],
                "--timeout",
            ),
            (&["--vm-namespace", "Bad_NS"], "--vm-namespace"),
            (&["--vm-namespace", "istio-system"], "Istio namespace"),
            (&["--vm-namespace", "vm", "-s", "a_b"], "--service-account"),
            (
                &["--vm-namespace", "vm", "--labels", "app=x"],
                "--workload-group",
            ),
            (
                &[
                    "--vm-namespace",
                    "vm",
                    "--workload-group",
                    "g",
                    "--ports",
                    "http=0",
                ],
                "--ports",
            ),
            (
                &[
                    "--vm-namespace",
                    "vm",
                    "--workload-group",
                    "g",
                    "--labels",
                    "novalue",
                ],
                "--labels",
            ),
            (
                &[
                    "--vm-namespace",
                    "vm",
                    "--workload-group",
                    "g",
                    "--era",
                    "legacy",
                ],
                "modern era",
            ),
            (
                &["-n", "vm", "--vm-namespace", "other"],
                "-n vm and --vm-namespace other name two different namespaces",
            ),
            (
                &["--vm-namespace", "vm", "--delete", "--ca-dir", "d"],
                "--delete does not take the CA files",
            ),
        ];
        for (argv, want) in cases {
            let err = resolve(argv).unwrap_err();
            assert!(err.message.contains(want), "{argv:?}: {}", err.message);
        }
        assert!(
            resolve(&["-n", "vm", "--restart-control-plane", "--yes"])
                .unwrap()
                .restart_control_plane,
            "restarting needs no CA files"
        );
        let err = resolve(&["--vm-namespace", "kube-system", "--delete"]).unwrap_err();
        assert!(err.message.contains("belongs to the cluster"), "{err}");
    }
}
