//! YAML text exactly as Go's `sigs.k8s.io/yaml` (go-yaml v2) writes it, so `mesh.yaml` matches istioctl byte for byte.
//!
//! go-yaml v2 sorts mapping keys with its own "natural" order (a non-letter sorts before a letter,
//! digit runs compare as numbers), quotes a string only when it would read back as another type
//! or cannot be plain, puts sequences under a key at the key's own indentation, and folds a long
//! value at a space past column 80 (sigs.k8s.io/yaml does not turn that off).

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value;

/// Render `value` (normally an object) as a YAML document.
pub(crate) fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => emit_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => emit_seq(&mut out, items, 0),
        other => {
            out.push_str(&inline(other, 0, 0));
            out.push('\n');
        }
    }
    out
}

/// go-yaml v2's key order (`keyList.Less`).
pub(crate) fn key_order(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            // The one that is not a letter sorts first.
            return if bl {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn) = (0i128, 0i128);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an.saturating_mul(10) + i128::from(ar[ai] as u8 - b'0');
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn.saturating_mul(10) + i128::from(br[bi] as u8 - b'0');
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| key_order(a.0, b.0));
    entries
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn emit_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in sorted(map) {
        pad(out, indent);
        let key = scalar(key, None, indent);
        out.push_str(&key);
        out.push(':');
        emit_value_after_key(out, value, indent, indent + key.chars().count() + 1);
    }
}

/// What follows `key:` (ending at `column`) — inline scalar or a nested block.
fn emit_value_after_key(out: &mut String, value: &Value, indent: usize, column: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            emit_map(out, map, indent + 2);
        }
        // go-yaml v2 does not indent a sequence under its key.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            emit_seq(out, items, indent);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other, indent + 2, column + 1));
            out.push('\n');
        }
    }
}

fn emit_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        match item {
            Value::Object(map) if !map.is_empty() => {
                let mut nested = String::new();
                emit_map(&mut nested, map, indent + 2);
                push_item(out, &nested, indent);
            }
            Value::Array(inner) if !inner.is_empty() => {
                let mut nested = String::new();
                emit_seq(&mut nested, inner, indent + 2);
                push_item(out, &nested, indent);
            }
            other => {
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&inline(other, indent + 2, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// A block rendered at `indent + 2` becomes a sequence item: its first line starts with `- `.
fn push_item(out: &mut String, nested: &str, indent: usize) {
    pad(out, indent);
    out.push_str("- ");
    out.push_str(&nested[indent + 2..]);
}

/// A scalar, `{}` or `[]` on the line of its key or dash, starting at `column`; long strings
/// fold onto lines indented by `indent`.
fn inline(value: &Value, indent: usize, column: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => scalar(s, Some(column), indent),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
    }
}

fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    go_float(n.as_f64().unwrap_or(f64::NAN))
}

/// `strconv.FormatFloat(f, 'g', -1, 64)` with go-yaml's names for infinities and NaN.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Go's -1 precision does.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f < 0.0 { "-" } else { "" };
    // Go decides with precision 6 when asked for the shortest representation.
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1;
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{text}")
}

/// How go-yaml's emitter may write a string (libyaml's scalar analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Analysis {
    block_plain: bool,
    single_quoted: bool,
    block: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_printable(c: char) -> bool {
    matches!(c as u32, 0x0A | 0x20..=0x7E | 0x85 | 0xA0..=0xD7FF | 0x10000..=0x0010_FFFF)
        || (matches!(c as u32, 0xE000..=0xFFFD) && c != '\u{FEFF}')
}

fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            block_plain: true,
            single_quoted: true,
            block: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let (mut flow_ind, mut block_ind) = (false, false);
    if s.starts_with("---") || s.starts_with("...") {
        flow_ind = true;
        block_ind = true;
    }
    let mut preceded_by_ws = true;
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break, mut prev_space, mut prev_break) =
        (false, false, false, false);
    let last = chars.len() - 1;
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_ws = chars.get(i + 1).is_none_or(|&n| is_blank(n) || is_break(n));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => {
                    flow_ind = true;
                    block_ind = true;
                }
                '?' | ':' => {
                    flow_ind = true;
                    block_ind |= followed_by_ws;
                }
                '-' if followed_by_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        } else {
            match c {
                ',' | '?' | '[' | ']' | '{' | '}' => flow_ind = true,
                ':' => {
                    flow_ind = true;
                    block_ind |= followed_by_ws;
                }
                '#' if preceded_by_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if is_break(c) {
            line_breaks = true;
        }
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= i == last;
            break_space |= prev_break;
            prev_space = true;
            prev_break = false;
        } else if is_break(c) {
            leading_break |= i == 0;
            trailing_break |= i == last;
            space_break |= prev_space;
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_by_ws = is_blank(c) || is_break(c) || c == '\0';
    }
    let mut a = Analysis {
        block_plain: true,
        single_quoted: true,
        block: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.block_plain = false;
        a.single_quoted = false;
    }
    if space_break || special {
        a = Analysis {
            block_plain: false,
            single_quoted: false,
            block: false,
        };
    }
    if line_breaks || block_ind {
        a.block_plain = false;
    }
    let _ = flow_ind; // Only flow context (never used here) cares about flow indicators.
    a
}

/// Whether go-yaml would read the plain text back as something other than a string.
fn resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: [&str; 40] = [
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
        ".NaN", ".NAN", "<<",
    ];
    if SPECIAL.contains(&s) {
        return true;
    }
    let Some(first) = s.chars().next() else {
        return true;
    };
    if !(first.is_ascii_digit() || matches!(first, '+' | '-' | '.')) {
        return false;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    is_yaml_float(&plain) || is_go_int(&plain) || is_timestamp(s)
}

/// go-yaml v2's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax (hex, octal and binary prefixes) and go-yaml's `0b`.
fn is_go_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else {
        (lower.as_str(), 10)
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix))
}

/// go-yaml v2 reads `2006-1-2` (optionally with a time) as a timestamp.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let rest = &s[5..];
    let date_end = rest.find(['T', 't', ' ']).unwrap_or(rest.len());
    let mut parts = rest[..date_end].split('-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| (1..=2).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`: YAML 1.1 sexagesimal numbers.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 2 {
            i += 1;
        }
        let group = &b[start..i];
        let valid = match group {
            [d] => d.is_ascii_digit(),
            [t, _] => (b'0'..=b'5').contains(t),
            _ => false,
        };
        if !valid {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// go-yaml's line width: a space after this column becomes a line break.
const BEST_WIDTH: usize = 80;

/// Where a string is written: `fold` is its start column when it may break lines (values),
/// `None` for keys (simple keys never break).
type Fold = Option<usize>;

/// A string as go-yaml writes it: plain, single-quoted, double-quoted or a literal block.
fn scalar(s: &str, fold: Fold, indent: usize) -> String {
    let key = fold.is_none();
    let a = analyze(s);
    let can_plain = !resolves_to_non_string(s) && !is_base60_float(s);
    if s.contains('\n') {
        // go-yaml picks a literal block; keys (simple-key context) and unsuitable text fall
        // back to double quotes.
        if a.block && !key {
            return literal(s, indent);
        }
        return double_quoted(s, fold, indent);
    }
    if can_plain {
        if a.block_plain && !(key && s.is_empty()) {
            return folded(s, fold, indent, "", false);
        }
        if a.single_quoted {
            return folded(s, fold, indent, "'", true);
        }
    }
    double_quoted(s, fold, indent)
}

/// Plain (`quote` empty) or single-quoted text, breaking at a single space once past the line
/// width, as libyaml's `write_plain_scalar` / `write_single_quoted_scalar` do.
fn folded(s: &str, fold: Fold, indent: usize, quote: &str, quoted: bool) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::from(quote);
    let mut column = fold.unwrap_or(0) + quote.len();
    let mut spaces = false;
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let next_space = chars.get(i + 1) == Some(&' ');
            let inner = !quoted || (i > 0 && i + 1 < chars.len());
            if fold.is_some() && !spaces && column > BEST_WIDTH && !next_space && inner {
                out.push('\n');
                pad(&mut out, indent);
                column = indent;
            } else {
                out.push(' ');
                column += 1;
            }
            spaces = true;
        } else {
            if quoted && c == '\'' {
                out.push_str("''");
                column += 2;
            } else {
                out.push(c);
                column += 1;
            }
            spaces = false;
        }
    }
    out.push_str(quote);
    out
}

fn literal(s: &str, indent: usize) -> String {
    let mut head = String::from("|");
    if s.starts_with(' ') || s.starts_with('\n') {
        head.push('2');
    }
    let trailing = s.len() - s.trim_end_matches('\n').len();
    match trailing {
        0 => head.push('-'),
        1 => {}
        _ => head.push('+'),
    }
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        head.push('\n');
        if !line.is_empty() {
            head.extend(std::iter::repeat_n(' ', indent));
            head.push_str(line);
        }
    }
    head
}

fn double_quoted(s: &str, fold: Fold, indent: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::from("\"");
    let mut column = fold.unwrap_or(0) + 1;
    let mut spaces = false;
    for (i, &c) in chars.iter().enumerate() {
        let before = out.len();
        if c == ' ' {
            if fold.is_some() && !spaces && column > BEST_WIDTH && i > 0 && i + 1 < chars.len() {
                out.push('\n');
                pad(&mut out, indent);
                column = indent;
                if chars.get(i + 1) == Some(&' ') {
                    out.push('\\');
                    column += 1;
                }
            } else {
                out.push(' ');
                column += 1;
            }
            spaces = true;
            continue;
        }
        spaces = false;
        match c {
            '\0' => out.push_str("\\0"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0B' => out.push_str("\\v"),
            '\x0C' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\x1B' => out.push_str("\\e"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{85}' => out.push_str("\\N"),
            '\u{A0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if !is_printable(c) || c == '\u{FEFF}' => {
                let v = c as u32;
                if v <= 0xFF {
                    let _ = write!(out, "\\x{v:02X}");
                } else if v <= 0xFFFF {
                    let _ = write!(out, "\\u{v:04X}");
                } else {
                    let _ = write!(out, "\\U{v:08X}");
                }
            }
            c => out.push(c),
        }
        column += out[before..].chars().count();
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sort_like_go_yaml() {
        let mut keys = vec![
            "ISTIO_METAJSON_LABELS",
            "ISTIO_META_WORKLOAD_NAME",
            "CA_ADDR",
            "CANONICAL_SERVICE",
            "a10",
            "a9",
            "b",
        ];
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(
            keys,
            [
                "CA_ADDR",
                "CANONICAL_SERVICE",
                "ISTIO_META_WORKLOAD_NAME",
                "ISTIO_METAJSON_LABELS",
                "a9",
                "a10",
                "b"
            ]
        );
    }

    #[test]
    fn strings_are_quoted_only_when_needed() {
        let cases = [
            ("foo", "foo"),
            ("", "\"\""),
            ("true", "\"true\""),
            ("yes", "\"yes\""),
            ("8080", "\"8080\""),
            ("1.5", "\"1.5\""),
            ("0x1F", "\"0x1F\""),
            ("1:20", "\"1:20\""),
            ("2001-12-14", "\"2001-12-14\""),
            (
                "istiod.istio-system.svc:15012",
                "istiod.istio-system.svc:15012",
            ),
            ("{\"a\":\"b\"}", "'{\"a\":\"b\"}'"),
            ("- x", "'- x'"),
            ("a: b", "'a: b'"),
            (" lead", "' lead'"),
            ("it's", "it's"),
            ("#x", "'#x'"),
            ("tab\there", "\"tab\\there\""),
            ("10.10.10.10", "10.10.10.10"),
        ];
        for (input, want) in cases {
            assert_eq!(scalar(input, Some(4), 2), want, "{input:?}");
        }
    }

    #[test]
    fn nested_documents_render_like_go_yaml() {
        let doc = json!({
            "defaultConfig": {
                "proxyMetadata": {"B": "", "A": "true"},
                "readinessProbe": {"httpGet": {"port": 8080}},
                "list": [1, {"x": "y", "z": [true]}],
                "empty": {},
                "none": [],
                "multi": "a\nb\n",
                "f": 1.5,
                "big": 1e21
            }
        });
        assert_eq!(
            to_string(&doc),
            "defaultConfig:\n  big: 1e+21\n  empty: {}\n  f: 1.5\n  list:\n  - 1\n  - x: \"y\"\n    z:\n    - true\n  multi: |\n    a\n    b\n  none: []\n  proxyMetadata:\n    A: \"true\"\n    B: \"\"\n  readinessProbe:\n    httpGet:\n      port: 8080\n"
        );
    }

    /// go-yaml folds long values at a space past column 80 (keys never fold).
    #[test]
    fn long_values_fold_like_go_yaml() {
        let words: Vec<String> = (1..=15).map(|i| format!("w{i:04}")).collect();
        let text = words.join(" ");
        let doc = json!({"a": {"k": text, "q": format!("x: {text}")}});
        let line1 = words[..13].join(" ");
        let tail = words[13..].join(" ");
        // "  q: 'x: " ends at column 9: word 13 ends past column 80 there too.
        let (q1, q_tail) = (&line1, &tail);
        assert_eq!(
            to_string(&doc),
            format!("a:\n  k: {line1}\n    {tail}\n  q: 'x: {q1}\n    {q_tail}'\n")
        );
    }

    #[test]
    fn floats_format_like_go() {
        for (f, want) in [
            (1.0, "1"),
            (0.000_01, "1e-05"),
            (123_456.5, "123456.5"),
            (-2.5, "-2.5"),
            (1e20, "1e+20"),
            (1_000_000.0, "1e+06"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
    }
}
