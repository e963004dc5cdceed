//! The fields of Istio's policy kinds doctor reads, typed: a DestinationRule's TLS settings
//! (istio/api@1.22.0 networking/v1alpha3/destination_rule.proto: `DestinationRule`,
//! `TrafficPolicy`, `Subset`, `ClientTLSSettings`; the same fields at @1.4.2), a
//! PeerAuthentication's mTLS modes (istio/api@1.22.0 security/v1beta1/peer_authentication.proto)
//! and a 1.4 `Policy`/`MeshPolicy`'s targets and peers (istio/api@1.4.2
//! authentication/v1alpha1/policy.proto).
//!
//! The objects stay JSON in the snapshot ([`crate::snapshot::Body::Dynamic`]); these are read
//! from it where the mesh is resolved. Each field reads on its own and as Pilot's own
//! (lenient) reading left doctor's: a field of the wrong type reads as absent and leaves the
//! others, a `tls` or `trafficPolicy` that is present counts as present whatever it holds, and
//! list entries keep their positions (the JSON pointers of suggested patches count them).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `T` from `v`, or its default when `v` is not of its shape.
fn or_default<T: DeserializeOwned + Default>(v: &Value) -> T {
    T::deserialize(v).unwrap_or_default()
}

/// A field of the wrong type reads as absent.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(or_default(&Value::deserialize(d)?))
}

/// A field that counts once present, whatever it holds (`tls: {}` and `tls: null` are a TLS
/// block without mode).
fn present<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Some(or_default(&Value::deserialize(d)?)))
}

/// A list whose entries keep their positions: an entry not of the shape reads as the default.
fn entries<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Value::deserialize(d)?
        .as_array()
        .map(|a| a.iter().map(or_default).collect())
        .unwrap_or_default())
}

/// A list, when it is one (`None` otherwise).
fn list<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(Value::deserialize(d)?
        .as_array()
        .map(|a| a.iter().map(or_default).collect()))
}

/// The strings of a list, when it is one.
fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Value::deserialize(d)?.as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    }))
}

/// The string pairs of a `map<string, string>`.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Value::deserialize(d)?
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default())
}

/// A map whose values read leniently.
fn value_map<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<BTreeMap<String, T>, D::Error> {
    Ok(Value::deserialize(d)?
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), or_default(v))).collect())
        .unwrap_or_default())
}

/// A `workloadSelector` (any value present selects: Pilot keys on its presence).
fn selector<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WorkloadSelector>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(Some(WorkloadSelector {
        match_labels: v
            .get("matchLabels")
            .map(|m| string_map(m.clone()).unwrap_or_default())
            .unwrap_or_default(),
    }))
}

/// `spec` of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// `host`.
    #[serde(default, deserialize_with = "lenient")]
    pub host: Option<String>,
    /// `exportTo` (its strings), when it is a list.
    #[serde(default, deserialize_with = "strings")]
    pub export_to: Option<Vec<String>>,
    /// `workloadSelector`, when present.
    #[serde(default, deserialize_with = "selector")]
    pub workload_selector: Option<WorkloadSelector>,
    /// `trafficPolicy`, when present.
    #[serde(default, deserialize_with = "present")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// `subsets`, in order.
    #[serde(default, deserialize_with = "entries")]
    pub subsets: Vec<Subset>,
}

/// `workloadSelector` / `selector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// `matchLabels` (string values).
    #[serde(default, deserialize_with = "string_map")]
    pub match_labels: BTreeMap<String, String>,
}

/// `trafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// `tls`, when present.
    #[serde(default, deserialize_with = "present")]
    pub tls: Option<ClientTls>,
    /// `portLevelSettings`, in order.
    #[serde(default, deserialize_with = "entries")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

/// `ClientTLSSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ClientTls {
    /// `mode` (absent: DISABLE, the proto's zero value).
    #[serde(default, deserialize_with = "lenient")]
    pub mode: Option<String>,
}

/// One `portLevelSettings` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PortTrafficPolicy {
    /// `port`.
    #[serde(default, deserialize_with = "lenient")]
    pub port: PortSelector,
    /// `tls`, when present (an entry without it clears the TLS for its port).
    #[serde(default, deserialize_with = "present")]
    pub tls: Option<ClientTls>,
}

/// `PortSelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PortSelector {
    /// `number`.
    #[serde(default, deserialize_with = "lenient")]
    pub number: Option<u64>,
}

/// One `subsets` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// `name`.
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    /// `trafficPolicy`, when present.
    #[serde(default, deserialize_with = "present")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `spec` of a PeerAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// `selector`.
    #[serde(default, deserialize_with = "lenient")]
    pub selector: Option<WorkloadSelector>,
    /// `mtls`.
    #[serde(default, deserialize_with = "lenient")]
    pub mtls: Option<PeerMtls>,
    /// `portLevelMtls`: port (as written) → its setting.
    #[serde(default, deserialize_with = "value_map")]
    pub port_level_mtls: BTreeMap<String, PeerMtls>,
}

/// `PeerAuthentication.MutualTLS` (and 1.4's `MutualTls`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PeerMtls {
    /// `mode`.
    #[serde(default, deserialize_with = "lenient")]
    pub mode: Option<String>,
}

/// `spec` of a 1.4 `Policy` or `MeshPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PolicySpec {
    /// `targets`, when a list.
    #[serde(default, deserialize_with = "list")]
    pub targets: Option<Vec<TargetSelector>>,
    /// `peers`, in order.
    #[serde(default, deserialize_with = "entries")]
    pub peers: Vec<PeerMethod>,
}

/// One `targets` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TargetSelector {
    /// `name`: the Service.
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    /// `ports`.
    #[serde(default, deserialize_with = "entries")]
    pub ports: Vec<TargetPort>,
}

/// A target's port, by number or name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TargetPort {
    /// `number`.
    #[serde(default, deserialize_with = "lenient")]
    pub number: Option<u64>,
    /// `name`.
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
}

/// One `peers` entry: only `mtls` is a peer method doctor reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PeerMethod {
    /// `mtls`, when present (`mtls: {}` and `mtls: null` are STRICT).
    #[serde(default, deserialize_with = "present")]
    pub mtls: Option<PeerMtls>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_on_their_own_and_presence_counts() {
        let spec: DestinationRuleSpec = serde_json::from_value(serde_json::json!({
            "host": 5,
            "exportTo": [".", 3],
            "workloadSelector": null,
            "trafficPolicy": {"tls": null, "portLevelSettings": [{"port": {"number": 80}}, "x", {"port": {"number": "81"}, "tls": {"mode": "SIMPLE"}}]},
            "subsets": [7, {"name": "v1", "trafficPolicy": 1}],
        }))
        .unwrap();
        assert_eq!(spec.host, None);
        assert_eq!(spec.export_to, Some(vec![".".to_string()]));
        assert_eq!(spec.workload_selector, Some(WorkloadSelector::default()));
        let p = spec.traffic_policy.unwrap();
        assert_eq!(p.tls, Some(ClientTls { mode: None }));
        let ports: Vec<(Option<u64>, Option<&str>)> = p
            .port_level_settings
            .iter()
            .map(|e| {
                (
                    e.port.number,
                    e.tls.as_ref().and_then(|t| t.mode.as_deref()),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [(Some(80), None), (None, None), (None, Some("SIMPLE"))]
        );
        assert_eq!(p.port_level_settings[0].tls, None);
        assert_eq!(spec.subsets.len(), 2);
        assert_eq!(spec.subsets[0], Subset::default());
        assert_eq!(
            spec.subsets[1].traffic_policy,
            Some(TrafficPolicy::default())
        );

        let pa: PeerAuthenticationSpec = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "a", "n": 1}},
            "mtls": "STRICT",
            "portLevelMtls": {"8080": {"mode": "DISABLE"}, "9090": 1},
        }))
        .unwrap();
        assert_eq!(pa.mtls, None);
        assert_eq!(pa.selector.unwrap().match_labels.len(), 1);
        assert_eq!(pa.port_level_mtls["8080"].mode.as_deref(), Some("DISABLE"));
        assert_eq!(pa.port_level_mtls["9090"], PeerMtls::default());

        let policy: PolicySpec = serde_json::from_value(serde_json::json!({
            "targets": [{"name": "s", "ports": [{"number": 80}, {"name": "http"}]}],
            "peers": [{"jwt": {}}, {"mtls": null}],
        }))
        .unwrap();
        assert_eq!(policy.targets.unwrap()[0].ports.len(), 2);
        assert_eq!(policy.peers[0].mtls, None);
        assert_eq!(policy.peers[1].mtls, Some(PeerMtls::default()));
    }
}
