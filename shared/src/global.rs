//! The legacy multi-network names: `<svc>.<ns>.global` hosts that meshvm's ServiceEntries give
//! a 127.255.x.y address (`prepare --expose` writes them, `bundle` turns them into `/etc/hosts`
//! lines, doctor checks them). Below the verbs, so each reads the same rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use kube::api::DynamicObject;
use serde_json::Value;

use crate::scope::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// The DNS suffix the legacy multi-network path names cluster Services with.
pub const GLOBAL_SUFFIX: &str = "global";

/// Whether `obj` carries meshvm's managed-by label.
pub fn is_ours(obj: &DynamicObject) -> bool {
    obj.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

pub(crate) fn strings(obj: &DynamicObject, pointer: &str) -> Vec<String> {
    obj.data
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `ip` lies in 127.255.0.0/16 (the range the 1.4 guide takes `.global` addresses from).
pub fn in_global_range(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 127 && b == 255
}

/// The `/etc/hosts` lines for the meshvm `.global` ServiceEntries among `entries` (the VM
/// namespace's): `127.255.x.y <svc>.<ns>.global`, sorted by host, one per host.
pub fn global_hosts(entries: &[DynamicObject]) -> String {
    let mut lines = BTreeMap::new();
    for e in entries.iter().filter(|e| is_ours(e)) {
        let Some(address) = strings(e, "/spec/addresses")
            .iter()
            .find_map(|a| a.parse::<Ipv4Addr>().ok().filter(|ip| in_global_range(*ip)))
        else {
            continue;
        };
        for host in strings(e, "/spec/hosts") {
            if host.ends_with(&format!(".{GLOBAL_SUFFIX}")) {
                lines.entry(host).or_insert(address);
            }
        }
    }
    let mut out = String::new();
    for (host, ip) in &lines {
        let _ = writeln!(out, "{ip} {host}");
    }
    out
}
