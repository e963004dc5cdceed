//! Small helpers shared by the sim: timestamps, uids, JSON navigation.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Seconds since the Unix epoch, as the API server's clock sees it.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// RFC 3339 UTC timestamp with second precision, the form `metav1.Time` serialises to.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days: exact for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The current time as an RFC 3339 string.
pub fn now_rfc3339() -> String {
    rfc3339(now_unix())
}

/// A random version-4 UUID in its canonical text form.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `len` random lowercase alphanumerics, as `generateName` suffixes use (no vowels, like the apiserver).
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The string at `obj.a.b.c`, when every step exists and the leaf is a string.
pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    value_at(obj, path).and_then(Value::as_str)
}

/// The value at `obj.a.b.c`.
pub fn value_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(*k))
}

/// The object map at `obj.a.b`, created (replacing non-objects) as needed.
pub fn map_at<'a>(obj: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = obj;
    for k in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .expect("just made an object")
            .entry((*k).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("just made an object")
}

/// The strings of a JSON array (`[]` when absent or not an array; non-strings skipped).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.name` of an object, or "".
pub fn name_of(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"]).unwrap_or("")
}

/// `metadata.namespace` of an object, or "".
pub fn namespace_of(obj: &Value) -> &str {
    str_at(obj, &["metadata", "namespace"]).unwrap_or("")
}

/// Splits `group/version` (or `version` for the core group) into its parts.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Is `s` a lowercase RFC 1123 subdomain (what most object names must be)?
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label_relaxed)
}

/// Is `s` a lowercase RFC 1123 label (namespaces, services)?
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_relaxed(s)
}

fn is_dns_label_relaxed(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Parses a JSON or YAML document into a JSON value (JSON first: it is what clients mostly send).
pub fn parse_json_or_yaml(body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_err) => {
            let text = std::str::from_utf8(body).map_err(|_| json_err.to_string())?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
        }
    }
}

/// One clause of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// `application` (or `*`).
    pub typ: String,
    /// `json` (or `*`).
    pub subtype: String,
    /// Parameters other than `q`, in order (`as`, `g`, `v`, `stream`, …).
    pub params: Vec<(String, String)>,
    /// Quality, 0 – 1 (1 when absent).
    pub q: f32,
}

impl MediaRange {
    /// A parameter's value.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an `Accept` header as goautoneg (which the apiserver uses) does: comma-separated
/// clauses with `;k=v` parameters, ordered by `q` (highest first), then concrete types before
/// wildcards; otherwise the client's order is kept.
pub fn parse_accept(header: &str) -> Vec<MediaRange> {
    let mut out: Vec<MediaRange> = header
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';').map(str::trim);
            let mt = parts.next().filter(|m| !m.is_empty())?;
            let (typ, subtype) = mt.split_once('/').unwrap_or((mt, "*"));
            let mut q = 1.0f32;
            let mut params = Vec::new();
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let (k, v) = (k.trim(), v.trim().trim_matches('"'));
                if k == "q" {
                    q = v.parse().unwrap_or(1.0);
                } else if !k.is_empty() {
                    params.push((k.to_string(), v.to_string()));
                }
            }
            Some(MediaRange {
                typ: typ.trim().to_string(),
                subtype: subtype.trim().to_string(),
                params,
                q,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then((a.typ == "*").cmp(&(b.typ == "*")))
            .then((a.subtype == "*").cmp(&(b.subtype == "*")))
    });
    out
}

/// A `Warning` header value as the apiserver writes it: `299 - "<text>"` with `"` and `\`
/// escaped (apimachinery@kubernetes-1.33.0 pkg/util/net/http.go:655-699 `NewWarningHeader`,
/// code 299 and agent `-` from apiserver@kubernetes-1.33.0 pkg/endpoints/filters/warning.go:102).
pub fn warning_header(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    format!("299 - {quoted}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_clauses_keep_client_order_within_a_quality() {
        let a = parse_accept(
            "application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=Table;v=v1beta1;g=meta.k8s.io;q=0.9, */*;q=0.9, application/json",
        );
        assert_eq!(a[0].param("v"), Some("v1"));
        assert_eq!(a[1].params, []);
        assert_eq!(a[2].param("v"), Some("v1beta1"));
        assert_eq!(a[3].typ, "*");
        assert!(parse_accept("").is_empty());
    }

    #[test]
    fn warning_header_quotes_like_go() {
        assert_eq!(
            warning_header(
                "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"
            ),
            "299 - \"v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice\""
        );
        assert_eq!(warning_header("a \"b\" \\c"), "299 - \"a \\\"b\\\" \\\\c\"");
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_120_328), "2025-11-26T01:25:28Z");
    }

    #[test]
    fn uid_is_canonical_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_subdomain("istio.expandvm"));
        assert!(!is_dns_subdomain("Bad_Name"));
        assert!(is_dns_label("kube-system"));
        assert!(!is_dns_label("a.b"));
    }
}
