//! The library's layers form a DAG, and no verb imports another: read from the sources, so a
//! new `crate::…` path that closes a cycle fails here, naming it.
//!
//! names · errors · pki · archive  →  flags  →  output · terminal  →  kube  →  read  →  istio
//! →  snapshot · args;  plan (with the write executor) over kube;  prepare · bundle · register ·
//! doctor over those;  dispatch · complete over args (and the binaries over everything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const VERBS: [&str; 4] = ["prepare", "bundle", "register", "doctor"];

/// Top-level module → the top-level modules its non-test code names as `crate::<module>`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name != "lib" && name != "main" {
            modules.insert(name);
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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
            if rel == "lib.rs"
                || file == "tests.rs"
                || file.ends_with("testutil.rs")
                || file.ends_with("_tests.rs")
            {
                continue;
            }
            let owner = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if modules.contains(&name) && name != owner {
                        graph.entry(owner.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    graph
}

/// A path from `from` back to itself, if the graph has one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn modules_form_a_dag_and_verbs_stand_alone() {
    let graph = imports();
    assert!(
        graph.contains_key("prepare") && graph.contains_key("kube"),
        "{graph:?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
    for verb in VERBS {
        let others: Vec<&String> = graph
            .get(verb)
            .into_iter()
            .flatten()
            .filter(|m| VERBS.contains(&m.as_str()))
            .collect();
        assert!(others.is_empty(), "verb {verb} imports {others:?}");
    }
}

#[test]
fn the_check_sees_a_cycle() {
    let mut graph = imports();
    graph
        .entry("kube".into())
        .or_default()
        .insert("prepare".into());
    assert!(cycle_through(&graph, "kube").is_some());
}
