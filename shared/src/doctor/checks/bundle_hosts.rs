//! `bundle.hosts`: the VM's hosts lines name the control plane at the gateway's current address.

use std::collections::BTreeMap;

use super::{gateway_addresses, gateway_service, or_pass};
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::Era;
use crate::snapshot::Snapshot;

/// Fails when `hosts` has no control-plane line (legacy: istio-citadel / istio-pilot; modern:
/// istiod), and — with a cluster whose gateway address is known — when those lines (or legacy
/// `gwip.txt`) point at another IP than the gateway's current one.
pub struct BundleHosts;

const ID: &str = "bundle.hosts";

/// `name → ip` for every host line.
pub(super) fn parse_hosts(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(ip) = words.next() else { continue };
        for name in words {
            out.insert(name.to_string(), ip.to_string());
        }
    }
    out
}

fn is_control_plane(era: Era, name: &str) -> bool {
    match era {
        Era::Legacy => name.starts_with("istio-citadel") || name.starts_with("istio-pilot"),
        Era::Modern => name.starts_with("istiod"),
    }
}

impl Check for BundleHosts {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "no control-plane host lines; with a cluster: the IP is not the gateway's current address"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        let Some(bundle) = &snap.bundle else {
            return vec![Finding::skip(ID, "no --bundle given")];
        };
        let Some(text) = bundle.text("hosts") else {
            return vec![Finding::skip(
                ID,
                "the bundle has no hosts file (see bundle.files)",
            )];
        };
        let Some(era) = bundle.era().or(ctx.era) else {
            return vec![Finding::skip(
                ID,
                "cannot tell the bundle's era (see bundle.files)",
            )];
        };
        let object = format!("Bundle {}", bundle.path.display());
        let hosts = parse_hosts(&text);
        let cp: Vec<(&String, &String)> = hosts
            .iter()
            .filter(|(n, _)| is_control_plane(era, n))
            .collect();
        let mut out = Vec::new();
        if cp.is_empty() {
            let names = match era {
                Era::Legacy => "istio-citadel, istio-pilot",
                Era::Modern => "istiod.<ns>.svc",
            };
            out.push(
                Finding::fail(ID, format!("hosts has no control-plane line ({names}): the VM cannot resolve its control plane"))
                    .object(object.clone())
                    .hint(format!("re-create the bundle: {}", super::rebundle_command(bundle))),
            );
        }
        let gateway_ips = snap
            .era()
            .and_then(|e| gateway_service(snap, e, &ctx.istio_ns))
            .map(|svc| gateway_addresses(svc).0)
            .unwrap_or_default();
        if !gateway_ips.is_empty() {
            let stale: Vec<String> = cp
                .iter()
                .filter(|(_, ip)| !gateway_ips.contains(ip))
                .map(|(n, ip)| format!("{n} → {ip}"))
                .collect();
            if !stale.is_empty() {
                out.push(
                    Finding::fail(ID, format!("hosts maps {} but the gateway's address is now {}", stale.join(", "), gateway_ips.join(", ")))
                        .object(object.clone())
                        .hint(format!("re-create the bundle with the gateway's current IP (or fix /etc/hosts on the VM): {}", super::rebundle_command(bundle))),
                );
            }
            if let Some(gwip) = bundle.text("gwip.txt").map(|t| t.trim().to_string())
                && !gwip.is_empty()
                && !gateway_ips.contains(&gwip)
            {
                out.push(
                    Finding::fail(
                        ID,
                        format!(
                            "gwip.txt says {gwip} but the gateway's address is now {}",
                            gateway_ips.join(", ")
                        ),
                    )
                    .object(object.clone())
                    .hint(format!(
                        "re-create the bundle: {}",
                        super::rebundle_command(bundle)
                    )),
                );
            }
        }
        let compared = if gateway_ips.is_empty() {
            " (no gateway address to compare)"
        } else {
            ", at the gateway's address"
        };
        or_pass(ID, out, format!("hosts names the control plane{compared}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip};
    use crate::doctor::testutil::{Fixture, expect};

    const RUNBOOK: &[u8] = b"35.1.2.3 istio-citadel istio-citadel.istio-system\n35.1.2.3 istio-pilot istio-pilot.istio-system\n35.1.2.3 istio-telemetry istio-telemetry.istio-system\n";

    fn legacy(hosts: &[u8], gwip: &[u8]) -> Fixture {
        Fixture::legacy().bundle(&[
            ("hosts", hosts, 0o644),
            ("gwip.txt", gwip, 0o644),
            ("key.pem", b"k", 0o600),
        ])
    }

    #[test]
    fn table() {
        let cases = [
            (
                "runbook hosts at the gateway IP",
                legacy(RUNBOOK, b"35.1.2.3\n"),
                Pass,
            ),
            (
                "gateway moved",
                legacy(
                    &RUNBOOK
                        .to_vec()
                        .iter()
                        .map(|b| if *b == b'5' { b'6' } else { *b })
                        .collect::<Vec<u8>>(),
                    b"35.1.2.3",
                ),
                Fail,
            ),
            ("stale gwip.txt", legacy(RUNBOOK, b"1.1.1.1"), Fail),
            (
                "no control-plane lines",
                legacy(b"10.0.0.1 db\n", b"35.1.2.3"),
                Fail,
            ),
            (
                "modern istiod line",
                Fixture::modern().bundle(&[
                    ("hosts", b"34.9.8.7 istiod.istio-system.svc\n", 0o644),
                    ("istio-token", b"t", 0o600),
                ]),
                Pass,
            ),
            (
                "bundle alone",
                Fixture::empty().bundle(&[("hosts", RUNBOOK, 0o644), ("key.pem", b"k", 0o600)]),
                Pass,
            ),
            ("no bundle", Fixture::legacy(), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&BundleHosts), severity, case);
        }
    }
}
