//! What a mutating verb plans, did, and did not do — one row per object — rendered the way an
//! operator reads it: a table of actions, or the objects themselves as a kubectl `List`.
//!
//! A verb builds a [`Plan`] purely from what it observed — a row that changes the cluster
//! carries its [`Write`] — then [`crate::plan::write::execute`] sends the writes and marks each row
//! done, failed or not attempted, so a run stopped by an error still says exactly which objects
//! were and were not written.

use std::fmt;
use std::io;

use serde::Serialize;
use serde_json::{Value, json};

pub mod write;

use crate::flags::OutputFormat;
use write::{Kind, Write};

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It does not exist and will be created.
    Create,
    /// It exists and will be changed.
    Update,
    /// It exists as wanted.
    Unchanged,
    /// It will be deleted.
    Delete,
    /// Something else happens to it (restart, refusal), told by the detail.
    Other,
}

/// How far a change got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Planned; nothing sent yet (or `--dry-run=client`).
    Planned,
    /// Sent with `dryRun=All` and accepted.
    ServerDryRun,
    /// Written.
    Done,
    /// The write failed.
    Failed,
    /// Not attempted because an earlier write failed.
    NotAttempted,
}

/// One object's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The action.
    pub action: Action,
    /// How far it got.
    pub state: State,
    /// The kind of the object.
    pub kind: Kind,
    /// Namespace, for namespaced kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// A short phrase about what changes ("added 203.0.113.10", "content differs").
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The object as it will be (or was) written, when there is one (`-o json|yaml`).
    #[serde(skip)]
    pub object: Option<Value>,
    /// The request that makes the change, when this row sends one.
    #[serde(skip)]
    pub write: Option<Write>,
}

impl Change {
    /// A planned change of `kind` `namespace/name`.
    pub fn new(action: Action, kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        Self {
            action,
            state: State::Planned,
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            detail: String::new(),
            object: None,
            write: None,
        }
    }
    /// With a detail phrase.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
    /// With the object to write.
    #[must_use]
    pub fn object(mut self, object: Value) -> Self {
        self.object = Some(object);
        self
    }
    /// With the write that makes the change.
    #[must_use]
    pub fn write(mut self, write: Write) -> Self {
        self.write = Some(write);
        self
    }
    /// `Kind ns/name` as messages name objects.
    pub fn reference(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
    /// Whether applying it sends a write.
    pub fn writes(&self) -> bool {
        !matches!(self.action, Action::Unchanged)
    }
    /// The ACTION column: "created", "would create", "failed to create", "not created".
    pub fn words(&self) -> String {
        let (done, would, fail, not) = match self.action {
            Action::Create => ("created", "would create", "failed to create", "not created"),
            Action::Update => ("updated", "would update", "failed to update", "not updated"),
            Action::Unchanged => ("unchanged", "unchanged", "unchanged", "unchanged"),
            Action::Delete => ("deleted", "would delete", "failed to delete", "not deleted"),
            Action::Other => ("done", "would do", "failed", "not done"),
        };
        match self.state {
            State::Planned => would.into(),
            State::ServerDryRun => format!("{done} (server dry run)"),
            State::Done => done.into(),
            State::Failed => fail.into(),
            State::NotAttempted => not.into(),
        }
    }
}

/// Every change of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// In the order they are applied.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Add a change.
    pub fn push(&mut self, change: Change) {
        self.changes.push(change);
    }
    /// Whether nothing needs writing.
    pub fn is_noop(&self) -> bool {
        self.changes.iter().all(|c| !c.writes())
    }
    /// Make every write wait for the writing row before it: one request at a time, in order.
    pub fn in_sequence(&mut self) {
        let mut previous = None;
        for (i, change) in self.changes.iter_mut().enumerate() {
            if let Some(write) = &mut change.write {
                if let Some(p) = previous {
                    write.after.push(p);
                }
                previous = Some(i);
            }
        }
    }
    /// The rows of this kind.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.kind == kind)
    }
    /// Mark every change not yet sent as not attempted (after a failure).
    pub fn abandon_rest(&mut self) {
        for c in &mut self.changes {
            if c.state == State::Planned && c.writes() {
                c.state = State::NotAttempted;
            }
        }
    }
    /// One line for stderr: "3 created, 1 unchanged" or "nothing to change".
    pub fn summary(&self) -> String {
        if self.is_noop() {
            return "nothing to change: everything is as wanted".into();
        }
        let mut counts: Vec<(String, usize)> = Vec::new();
        for c in &self.changes {
            let w = c.words();
            match counts.iter_mut().find(|(k, _)| *k == w) {
                Some((_, n)) => *n += 1,
                None => counts.push((w, 1)),
            }
        }
        counts
            .iter()
            .map(|(w, n)| format!("{n} {w}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Write the plan: a table of rows, or (`-o json|yaml`) the objects as a kubectl `List`
    /// with Secret data redacted unless `show_secrets`.
    pub fn write(
        &self,
        out: &mut impl io::Write,
        format: OutputFormat,
        show_secrets: bool,
    ) -> io::Result<()> {
        match format {
            OutputFormat::Table => self.write_table(out),
            OutputFormat::Json | OutputFormat::Yaml => {
                let items: Vec<Value> = self
                    .changes
                    .iter()
                    .filter_map(|c| c.object.clone())
                    .map(|mut o| {
                        if !show_secrets {
                            redact(&mut o);
                        }
                        o
                    })
                    .collect();
                let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
                crate::output::write_data(out, format, &list).map(|_| ())
            }
        }
    }

    fn write_table(&self, out: &mut impl io::Write) -> io::Result<()> {
        let rows: Vec<[String; 5]> = self
            .changes
            .iter()
            .map(|c| {
                [
                    c.kind.to_string(),
                    c.namespace.clone().unwrap_or_default(),
                    c.name.clone(),
                    c.words(),
                    c.detail.clone(),
                ]
            })
            .collect();
        write_columns(
            out,
            &["KIND", "NAMESPACE", "NAME", "ACTION", "DETAIL"],
            &rows,
        )
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// Left-aligned columns separated by three spaces, as kubectl's tables are.
pub fn write_columns<const N: usize>(
    out: &mut impl io::Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    crate::output::write_table(out, *header, rows.iter().cloned())
}

/// Replace every value of a Secret's `data`/`stringData` with a redaction marker that keeps
/// the length, and drop the last-applied annotation that could carry them.
pub fn redact(object: &mut Value) {
    if object.get("kind").and_then(Value::as_str) != Some("Secret") {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Object(map)) = object.get_mut(field) {
            for value in map.values_mut() {
                let len = value.as_str().map_or(0, str::len);
                *value = Value::String(format!("REDACTED ({len} bytes)"));
            }
        }
    }
    if let Some(Value::Object(ann)) = object.pointer_mut("/metadata/annotations") {
        ann.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let mut p = Plan::default();
        p.push(
            Change::new(
                Action::Create,
                Kind::Secret,
                Some("istio-system"),
                "cacerts",
            )
            .object(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "cacerts", "namespace": "istio-system"},
                "data": {"ca-key.pem": "c2VjcmV0LWtleQ=="}
            })),
        );
        p.push(Change::new(
            Action::Unchanged,
            Kind::Namespace,
            None,
            "expandvm",
        ));
        p
    }

    #[test]
    fn words_follow_state() {
        let mut c = Change::new(Action::Create, Kind::Secret, Some("ns"), "x");
        assert_eq!(c.words(), "would create");
        c.state = State::Done;
        assert_eq!(c.words(), "created");
        c.state = State::ServerDryRun;
        assert_eq!(c.words(), "created (server dry run)");
        c.state = State::NotAttempted;
        assert_eq!(c.words(), "not created");
        assert_eq!(c.reference(), "Secret ns/x");
    }

    #[test]
    fn table_lists_each_object() {
        let mut out = Vec::new();
        plan().write(&mut out, OutputFormat::Table, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("KIND"));
        assert!(lines[1].contains("cacerts") && lines[1].contains("would create"));
        assert!(lines[2].contains("expandvm") && lines[2].contains("unchanged"));
    }

    #[test]
    fn yaml_redacts_secrets_unless_asked() {
        let mut out = Vec::new();
        plan().write(&mut out, OutputFormat::Yaml, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("c2VjcmV0LWtleQ=="), "{text}");
        assert!(text.contains("REDACTED (16 bytes)"), "{text}");
        assert!(text.contains("kind: List"), "{text}");
        let mut out = Vec::new();
        plan().write(&mut out, OutputFormat::Json, true).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("c2VjcmV0LWtleQ=="));
    }

    #[test]
    fn summary_and_abandon() {
        let mut p = plan();
        assert!(!p.is_noop());
        p.abandon_rest();
        assert_eq!(p.changes[0].state, State::NotAttempted);
        assert_eq!(
            p.changes[1].state,
            State::Planned,
            "unchanged rows stay as they are"
        );
        assert_eq!(p.summary(), "1 not created, 1 unchanged");
        let mut noop = Plan::default();
        noop.push(Change::new(Action::Unchanged, Kind::Namespace, None, "x"));
        assert!(noop.summary().starts_with("nothing to change"));
    }
}
