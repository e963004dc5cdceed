//! Names and the words verbs read from their command lines — port words, addresses, DNS names,
//! `k=v` label and annotation pairs — one parser and one set of messages for every verb. The
//! bottom layer: it imports nothing of the crate.
//!
//! Every function here is pure and returns the message of a usage error, so `Options::resolve`
//! can reject a bad command line before anything talks to the cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// A Service/Endpoints port: its name and number, as `istioctl register` builds them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    /// The port's name (a DNS-1123 label).
    pub name: String,
    /// The port number, 1–65535.
    pub port: u16,
}

impl fmt::Display for NamedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

/// Names istioctl 1.4 gives a bare port, so Istio can guess the protocol
/// (`portsToName` in its `pilot/pkg/serviceregistry/kube/register.go`).
const WELL_KNOWN_PORT_NAMES: [(u16, &str); 4] = [
    (80, "http"),
    (443, "https"),
    (3306, "mysql"),
    (8080, "http"),
];

/// The name istioctl 1.4 gives a bare port number, if it has one.
pub fn well_known_port_name(port: u16) -> Option<&'static str> {
    WELL_KNOWN_PORT_NAMES
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, n)| *n)
}

/// Parse an integer the way Go's `strconv.Atoi` does (optional sign, ASCII digits, nothing
/// else), because istioctl 1.4 read port words with it and `+80` or `0080` meant port 80 there.
fn go_atoi(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'+') => (false, &text[1..]),
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: i64 = 0;
    for b in digits.bytes() {
        value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// Parse one port word of `register SERVICE IP [NAME:]PORT…` as istioctl 1.4 did:
/// `name:port` keeps the name (split at the first `:`); a bare port is named from
/// `{80: http, 443: https, 3306: mysql, 8080: http}`, else by its number as written.
/// Unlike istioctl, a number outside 1–65535 or a name Kubernetes would refuse is an error here.
pub fn parse_port_word(word: &str) -> Result<NamedPort, String> {
    let (name, number) = match word.find(':') {
        Some(i) => (&word[..i], &word[i + 1..]),
        None => ("", word),
    };
    let Some(value) = go_atoi(number) else {
        return Err(format!(
            "port {word:?}: {number:?} is not a port number; write PORT or NAME:PORT, e.g. 80 or http:80"
        ));
    };
    let port = u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {word:?}: {value} is outside 1-65535"))?;
    let name = if name.is_empty() {
        well_known_port_name(port).unwrap_or(number).to_owned()
    } else {
        name.to_owned()
    };
    if let Err(problem) = dns1123_label(&name) {
        return Err(format!(
            "port {word:?}: the name {name:?} {problem}; write NAME:PORT with a name like http or tcp-db"
        ));
    }
    Ok(NamedPort { name, port })
}

/// Parse every port word, refusing a port number or name given twice (Kubernetes would too).
pub fn parse_port_words<S: AsRef<str>>(words: &[S]) -> Result<Vec<NamedPort>, String> {
    let ports = words
        .iter()
        .map(|w| parse_port_word(w.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&ports)?;
    Ok(ports)
}

/// Parse modern `--ports name=port,…` (the WorkloadEntry's `ports` map).
pub fn parse_named_ports<S: AsRef<str>>(items: &[S]) -> Result<Vec<NamedPort>, String> {
    let mut ports = Vec::new();
    for item in items {
        let item = item.as_ref();
        let Some((name, number)) = item.split_once('=') else {
            return Err(format!(
                "--ports {item:?}: expected NAME=PORT, e.g. http=8080"
            ));
        };
        if let Err(problem) = dns1123_label(name) {
            return Err(format!("--ports {item:?}: the name {name:?} {problem}"));
        }
        let port = number
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                format!("--ports {item:?}: {number:?} is not a port number in 1-65535")
            })?;
        ports.push(NamedPort {
            name: name.to_owned(),
            port,
        });
    }
    check_unique(&ports)?;
    Ok(ports)
}

fn check_unique(ports: &[NamedPort]) -> Result<(), String> {
    for (i, p) in ports.iter().enumerate() {
        if let Some(q) = ports[..i].iter().find(|q| q.port == p.port) {
            return Err(format!(
                "port {} is given twice ({q} and {p}); give each port once",
                p.port
            ));
        }
        if let Some(q) = ports[..i].iter().find(|q| q.name == p.name) {
            return Err(format!(
                "port name {:?} is given twice ({q} and {p}); give each port its own name",
                p.name
            ));
        }
    }
    Ok(())
}

/// Parse a VM address: IPv4 or IPv6 that a peer can reach (no unspecified, loopback,
/// link-local, multicast or broadcast address — Kubernetes refuses most of them in Endpoints).
pub fn parse_address(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text.parse().map_err(|_| {
        format!("address {text:?} is not an IPv4 or IPv6 address, e.g. 203.0.113.7 or 2001:db8::7")
    })?;
    let problem = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local (169.254.0.0/16)"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local (fe80::/10)"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        IpAddr::V4(_) | IpAddr::V6(_) => None,
    };
    match problem {
        Some(what) => Err(format!(
            "address {text:?} is {what}; give the VM's routable IP address"
        )),
        None => Ok(ip),
    }
}

/// A name given with `flag`, judged by `rule` (one of the checks below): the message names the
/// flag, the value and what is wrong, the same for every verb, e.g. `--vm-namespace "Bad_NS" is
/// not a DNS-1123 label (…)`.
pub fn flag_name(
    flag: &str,
    value: &str,
    rule: fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    rule(value).map_err(|why| format!("{flag} {value:?} {why}"))
}

/// Check a DNS-1123 label (namespaces, port names): at most 63 lowercase alphanumerics or
/// `-`, starting and ending alphanumeric. Returns what is wrong.
pub fn dns1123_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("is {} characters long (at most 63)", name.len()));
    }
    let ok_inner = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !ok_inner || !ends(name.as_bytes()[0]) || !ends(name.as_bytes()[name.len() - 1]) {
        return Err(
            "is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
                .into(),
        );
    }
    Ok(())
}

/// Check a DNS-1123 subdomain (ServiceAccount, WorkloadEntry names): dot-separated labels,
/// at most 253 characters.
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err(format!("is {} characters long (at most 253)", name.len()));
    }
    if name.split('.').any(|part| dns1123_label(part).is_err()) {
        return Err(
            "is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
                .into(),
        );
    }
    Ok(())
}

/// Check a DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn dns1035_label(name: &str) -> Result<(), String> {
    dns1123_label(name)?;
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err("must start with a lowercase letter (DNS-1035 label)".into());
    }
    Ok(())
}

/// The name part of a label or annotation key, or a label value: at most 63 alphanumerics,
/// `-`, `_` or `.`, starting and ending alphanumeric.
fn qualified_part(text: &str) -> bool {
    let ends = |b: u8| b.is_ascii_alphanumeric();
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && ends(text.as_bytes()[0])
        && ends(text.as_bytes()[text.len() - 1])
}

/// Check a label or annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain.
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && let Err(problem) = dns1123_subdomain(prefix)
    {
        return Err(format!("its prefix {prefix:?} {problem}"));
    }
    if !qualified_part(name) {
        return Err(format!(
            "its name {name:?} must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Which map a `k=v` pair goes into; label values are checked, annotation values are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// `-l k=v`
    Label,
    /// `-a k=v`
    Annotation,
}

/// Parse `k=v` pairs into a map (a later key wins, as with kubectl), checking keys and label values.
pub fn parse_pairs<S: AsRef<str>>(
    items: &[S],
    kind: PairKind,
) -> Result<BTreeMap<String, String>, String> {
    let flag = match kind {
        PairKind::Label => "--labels",
        PairKind::Annotation => "--annotations",
    };
    let mut map = BTreeMap::new();
    for item in items {
        let item = item.as_ref();
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("{flag} {item:?}: expected KEY=VALUE, e.g. app=vm"));
        };
        if let Err(problem) = qualified_name(key) {
            return Err(format!(
                "{flag} {item:?}: the key {key:?} is invalid: {problem}"
            ));
        }
        if kind == PairKind::Label && !value.is_empty() && !qualified_part(value) {
            return Err(format!(
                "{flag} {item:?}: the value {value:?} must be empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            ));
        }
        map.insert(key.to_owned(), value.to_owned());
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(name: &str, port: u16) -> NamedPort {
        NamedPort {
            name: name.into(),
            port,
        }
    }

    #[test]
    fn port_words_as_istioctl_1_4() {
        let cases: &[(&str, Result<NamedPort, &str>)] = &[
            ("80", Ok(np("http", 80))),
            ("443", Ok(np("https", 443))),
            ("3306", Ok(np("mysql", 3306))),
            ("8080", Ok(np("http", 8080))),
            ("9080", Ok(np("9080", 9080))),
            ("grpc:9090", Ok(np("grpc", 9090))),
            ("tcp-db:80", Ok(np("tcp-db", 80))),
            (":443", Ok(np("https", 443))),
            // Go's Atoi takes a sign and leading zeros; the bare name is the number as written.
            ("+80", Ok(np("http", 80))),
            ("0080", Ok(np("http", 80))),
            ("09080", Ok(np("09080", 9080))),
            ("+9080", Err("the name \"+9080\"")),
            ("http", Err("not a port number")),
            ("http:", Err("not a port number")),
            ("a:b:80", Err("not a port number")),
            ("80x", Err("not a port number")),
            ("", Err("not a port number")),
            ("0", Err("outside 1-65535")),
            ("65536", Err("outside 1-65535")),
            ("-1", Err("outside 1-65535")),
            ("99999999999999999999", Err("not a port number")),
            ("HTTP:80", Err("DNS-1123")),
            ("my_port:80", Err("DNS-1123")),
        ];
        for (word, want) in cases {
            let got = parse_port_word(word);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{word}"),
                (Err(part), Err(msg)) => assert!(msg.contains(part), "{word}: {msg}"),
                _ => panic!("{word}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn duplicate_ports_are_refused() {
        assert!(
            parse_port_words(&["80", "http:8080"])
                .unwrap_err()
                .contains("name \"http\"")
        );
        assert!(
            parse_port_words(&["80", "web:80"])
                .unwrap_err()
                .contains("port 80 is given twice")
        );
        assert_eq!(
            parse_port_words(&["80", "grpc:9090"]).unwrap(),
            [np("http", 80), np("grpc", 9090)]
        );
    }

    #[test]
    fn named_ports_for_workload_entries() {
        assert_eq!(
            parse_named_ports(&["http=8080", "grpc=9090"]).unwrap(),
            [np("http", 8080), np("grpc", 9090)]
        );
        for (bad, part) in [
            ("http:8080", "NAME=PORT"),
            ("http=0", "1-65535"),
            ("http=70000", "1-65535"),
            ("Http=80", "DNS-1123"),
            ("=80", "is empty"),
        ] {
            let err = parse_named_ports(&[bad]).unwrap_err();
            assert!(err.contains(part), "{bad}: {err}");
        }
    }

    #[test]
    fn addresses() {
        for good in ["203.0.113.7", "10.0.0.5", "2001:db8::7", "fd00::1"] {
            assert!(parse_address(good).is_ok(), "{good}");
        }
        let cases = [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("169.254.10.1", "link-local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("10.0.0", "not an IPv4 or IPv6"),
            ("010.0.0.1", "not an IPv4 or IPv6"),
            ("vm.example.com", "not an IPv4 or IPv6"),
        ];
        for (bad, part) in cases {
            let err = parse_address(bad).unwrap_err();
            assert!(err.contains(part), "{bad}: {err}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(dns1123_label("expandvm").is_ok());
        assert!(dns1123_label("9080").is_ok());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label("a-").is_err());
        assert!(dns1123_label("A").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("vm-1.example").is_ok());
        assert!(dns1123_subdomain("vm..1").is_err());
        assert!(dns1035_label("expandvm").is_ok());
        assert!(dns1035_label("1vm").unwrap_err().contains("letter"));
    }

    #[test]
    fn pairs() {
        let m = parse_pairs(
            &["app=vm", "topology.istio.io/network=net1", "empty="],
            PairKind::Label,
        )
        .unwrap();
        assert_eq!(m["app"], "vm");
        assert_eq!(m["topology.istio.io/network"], "net1");
        assert_eq!(m["empty"], "");
        let cases = [
            ("app", PairKind::Label, "KEY=VALUE"),
            ("=vm", PairKind::Label, "key \"\""),
            ("app=v m", PairKind::Label, "the value"),
            ("Bad_Prefix/app=x", PairKind::Label, "prefix"),
            ("a b=x", PairKind::Annotation, "key"),
        ];
        for (bad, kind, part) in cases {
            let err = parse_pairs(&[bad], kind).unwrap_err();
            assert!(err.contains(part), "{bad}: {err}");
        }
        let free = parse_pairs(&["note=any text: at all"], PairKind::Annotation).unwrap();
        assert_eq!(free["note"], "any text: at all");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn port_words_never_panic(word in "\\PC{0,24}") {
                let _ = parse_port_word(&word);
            }

            #[test]
            fn name_port_round_trips(name in "[a-z]([a-z0-9-]{0,13}[a-z0-9])?", port in 1u16..=65535) {
                let word = format!("{name}:{port}");
                let parsed = parse_port_word(&word).unwrap();
                prop_assert_eq!(&parsed, &NamedPort { name: name.clone(), port });
                prop_assert_eq!(parsed.to_string(), word);
            }

            #[test]
            fn bare_ports_parse_to_their_number(port in 1u16..=65535) {
                let parsed = parse_port_word(&port.to_string()).unwrap();
                prop_assert_eq!(parsed.port, port);
                let want = well_known_port_name(port).map_or_else(|| port.to_string(), str::to_owned);
                prop_assert_eq!(parsed.name, want);
            }
        }
    }
}
