//! Every command a message suggests is written in backticks, so a reader can tell it from the
//! prose around it and the hint tests (plugins/tests/it/hints.rs) can find it and run it as
//! printed. Read from the sources: a string literal in the library that names a kubectl command
//! outside backticks fails here, naming the file and line.
//!
//! Allowed: `--help` text (args.rs) and the dispatcher's usage line, which show commands as
//! examples on lines of their own, literals that *are* a command (they start with `kubectl `:
//! builders whose callers put the result in backticks), and commands on a line of their own
//! (`#   kubectl create rolebinding …` in the manifest `--print-rbac` prints).

use std::path::Path;

/// kubectl words that start a command (not prose such as "as kubectl does").
const COMMANDS: [&str; 12] = [
    "meshvm",
    "get",
    "apply",
    "create",
    "patch",
    "label",
    "annotate",
    "rollout",
    "delete",
    "describe",
    "kustomize",
    "-n",
];

/// The string literals of one line of Rust (good enough for this codebase's one-line literals).
fn literals(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    let mut current: Option<String> = None;
    while let Some(c) = chars.next() {
        match (&mut current, c) {
            (None, '"') => current = Some(String::new()),
            (Some(s), '\\') => {
                if let Some(n) = chars.next() {
                    s.push('\\');
                    s.push(n);
                }
            }
            (Some(_), '"') => out.push(current.take().unwrap_or_default()),
            (Some(s), c) => s.push(c),
            (None, _) => {}
        }
    }
    out
}

fn unquoted(literal: &str) -> Option<usize> {
    let mut offset = 0;
    for (i, part) in literal.split('`').enumerate() {
        if i % 2 == 0 {
            for (at, _) in part.match_indices("kubectl ") {
                let absolute = offset + at;
                let next = part[at + 8..].split_whitespace().next().unwrap_or_default();
                // A command on a line of its own (a builder's result, a `#` comment line of a
                // printed manifest) is no prose to tell it from.
                let own_line = literal[..absolute]
                    .rsplit("\\n")
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches(['#', ' '])
                    .is_empty();
                if !own_line && COMMANDS.contains(&next) {
                    return Some(absolute);
                }
            }
        }
        offset += part.len() + 1;
    }
    None
}

#[test]
fn every_suggested_command_is_in_backticks() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let file = rel.rsplit('/').next().unwrap_or_default();
            if matches!(rel.as_str(), "args.rs" | "dispatch.rs")
                || file == "tests.rs"
                || file.ends_with("testutil.rs")
                || file.ends_with("_tests.rs")
                || path.extension().is_none_or(|e| e != "rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for lit in literals(line) {
                    if unquoted(&lit).is_some() {
                        bad.push(format!("{rel}:{}: {lit}", n + 1));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "commands outside backticks in messages:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_rule_sees_what_it_should() {
    assert_eq!(unquoted("kubectl -n x patch dr y"), None, "a builder");
    assert_eq!(
        unquoted("# bind it:\\n#   kubectl create rolebinding x"),
        None
    );
    assert!(unquoted("# bind it with kubectl create rolebinding x").is_some());
    assert!(unquoted("fix: kubectl -n x patch dr y").is_some());
    assert_eq!(unquoted("fix: `kubectl -n x patch dr y`"), None);
    assert_eq!(unquoted("-f DIR reads the folder, as kubectl does"), None);
    assert_eq!(
        literals(r#"x("a \"b\" `c`", "d")"#),
        [r#"a \"b\" `c`"#, "d"]
    );
}
