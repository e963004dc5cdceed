//! Doctor's report: table, JSON, YAML and SARIF, and the exit outcome.

use std::io::{self, Write};

use serde::Serialize;

use super::{Breaks, Finding, Severity, checks};
use crate::args::{DoctorOutput as Format, FailOn};
use crate::errors::Outcome;
use crate::istio::Era;
use crate::snapshot::{Note, Origin};

/// Everything doctor found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The era of the (first) cluster.
    pub era: Option<Era>,
    /// Auto mTLS in effect.
    pub auto_mtls: bool,
    /// The Pilot release judged as (`1.22`, or the assumed newest, said so).
    pub release: Option<String>,
    /// Findings in check order.
    pub findings: Vec<Finding>,
    /// Where SARIF points findings that name no manifest object (the first `-f` file), since
    /// code-scanning services drop results without a location.
    pub fallback_origin: Option<Origin>,
    /// Per-namespace readiness for STRICT, sorted by name ([`Report::readiness`]).
    pub namespaces: Vec<NamespaceReadiness>,
    /// What reading `-f` set aside (also said on stderr as it was read).
    pub notes: Vec<Note>,
    /// `--bundle` alone: only the bundle checks ran, and nothing is said of the mesh.
    pub bundle_only: bool,
}

/// Whether one namespace is ready for STRICT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceReadiness {
    /// The namespace.
    pub name: String,
    /// No failing finding concerns it.
    pub ready: bool,
    /// Checks with a failing finding that concerns it (or the whole mesh).
    pub blockers: Vec<&'static str>,
    /// Checks with a warning that concerns it (they do not block).
    pub warnings: Vec<&'static str>,
}

/// Counts per severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// `pass` findings.
    pub pass: usize,
    /// `warn` findings.
    pub warn: usize,
    /// `fail` findings.
    pub fail: usize,
    /// `skip` findings.
    pub skip: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    era: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pilot_release: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_mtls: Option<bool>,
    summary: Summary,
    findings: Vec<JsonFinding<'a>>,
    namespaces: &'a [NamespaceReadiness],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<JsonNote<'a>>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    check: &'static str,
    severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
    object: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<JsonSource>,
    message: &'a str,
    hint: &'a str,
    namespaces: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    breaks: Option<Breaks>,
}

/// Where a `-f` object (or note) is: `{file, line}`.
#[derive(Serialize)]
struct JsonSource {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
}

impl JsonSource {
    fn of(origin: &Origin) -> Self {
        Self {
            file: origin.file.to_string_lossy().into_owned(),
            line: (origin.line > 0).then_some(origin.line),
        }
    }
}

#[derive(Serialize)]
struct JsonNote<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<JsonSource>,
    message: &'a str,
}

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Report {
    /// One row per namespace of `universe` (plus those findings name): blocked by every failing
    /// finding that concerns it — findings naming no namespace concern the whole mesh — and
    /// listing the checks that warn about it.
    pub fn readiness(
        universe: impl IntoIterator<Item = String>,
        findings: &[Finding],
    ) -> Vec<NamespaceReadiness> {
        let mut names: std::collections::BTreeSet<String> = universe.into_iter().collect();
        for f in findings {
            if matches!(f.severity, Severity::Warn | Severity::Fail) {
                names.extend(f.namespaces.iter().cloned());
            }
        }
        names
            .into_iter()
            .map(|name| {
                let mut blockers: Vec<&'static str> = Vec::new();
                let mut warnings: Vec<&'static str> = Vec::new();
                for f in findings {
                    let concerns = f.namespaces.is_empty() || f.namespaces.contains(&name);
                    // Plaintext seen arriving blocks its namespace even as a warning: STRICT
                    // would refuse clients that are sending now.
                    let seen_plaintext = f.check == super::traffic::CHECK
                        && f.severity == Severity::Warn
                        && f.namespaces.contains(&name);
                    let list = match f.severity {
                        Severity::Fail => &mut blockers,
                        Severity::Warn if seen_plaintext => &mut blockers,
                        Severity::Warn => &mut warnings,
                        _ => continue,
                    };
                    if concerns && !list.contains(&f.check) {
                        list.push(f.check);
                    }
                }
                NamespaceReadiness {
                    ready: blockers.is_empty(),
                    name,
                    blockers,
                    warnings,
                }
            })
            .collect()
    }

    /// Counts per severity.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.findings {
            match f.severity {
                Severity::Pass => s.pass += 1,
                Severity::Warn => s.warn += 1,
                Severity::Fail => s.fail += 1,
                Severity::Skip => s.skip += 1,
            }
        }
        s
    }

    /// Exit 1 (`Findings`) on any fail, or any warn with `--fail-on=warn`.
    pub fn outcome(&self, fail_on: FailOn) -> Outcome {
        let s = self.summary();
        if s.fail > 0 || (fail_on == FailOn::Warn && s.warn > 0) {
            Outcome::Findings
        } else {
            Outcome::Success
        }
    }

    fn era_text(&self) -> &'static str {
        match self.era {
            Some(Era::Legacy) => "legacy",
            Some(Era::Modern) => "modern",
            None => "unknown",
        }
    }

    fn message(f: &Finding) -> String {
        match &f.context {
            Some(c) => format!("[{c}] {}", f.message),
            None => f.message.clone(),
        }
    }

    /// `file:line` of a finding's object, for the table.
    fn source(f: &Finding) -> String {
        f.origin.as_ref().map_or(String::new(), |o| {
            format!("{}:{}", o.file.display(), o.line)
        })
    }

    fn json(&self) -> JsonReport<'_> {
        JsonReport {
            era: self.era_text(),
            pilot_release: self.release.as_deref(),
            auto_mtls: (!self.bundle_only).then_some(self.auto_mtls),
            summary: self.summary(),
            findings: self
                .findings
                .iter()
                .map(|f| JsonFinding {
                    check: f.check,
                    severity: f.severity,
                    context: f.context.as_deref(),
                    object: &f.object,
                    source: f.origin.as_ref().map(JsonSource::of),
                    message: &f.message,
                    hint: &f.hint,
                    namespaces: &f.namespaces,
                    breaks: f.breaks,
                })
                .collect(),
            namespaces: &self.namespaces,
            notes: self
                .notes
                .iter()
                .map(|n| JsonNote {
                    source: n.origin.as_ref().map(JsonSource::of),
                    message: &n.message,
                })
                .collect(),
        }
    }

    /// Write the report in `format`; `color` adds ANSI colours to the table only.
    pub fn write(&self, out: &mut impl Write, format: Format, color: bool) -> io::Result<()> {
        // Standard output is line-buffered: a write per line of a 100 000-finding report.
        let mut out = io::BufWriter::with_capacity(1 << 16, out);
        self.write_unbuffered(&mut out, format, color)?;
        out.flush()
    }

    fn write_unbuffered(
        &self,
        out: &mut impl Write,
        format: Format,
        color: bool,
    ) -> io::Result<()> {
        match format {
            Format::Table => self.write_table(out, color),
            Format::Json => {
                serde_json::to_writer_pretty(&mut *out, &self.json())?;
                writeln!(out)
            }
            Format::Yaml => {
                let text = serde_saphyr::to_string(&self.json())
                    .map_err(|e| io::Error::other(e.to_string()))?;
                out.write_all(text.as_bytes())
            }
            Format::Sarif => {
                serde_json::to_writer_pretty(&mut *out, &self.sarif())?;
                writeln!(out)
            }
        }
    }

    fn write_table(&self, out: &mut impl Write, color: bool) -> io::Result<()> {
        let paint = |sev: Severity| -> String {
            let code = match sev {
                Severity::Fail => RED,
                Severity::Warn => YELLOW,
                Severity::Pass => GREEN,
                Severity::Skip => DIM,
            };
            if color {
                format!("{code}{}{RESET}", sev.as_str())
            } else {
                sev.as_str().to_string()
            }
        };
        let row = |f: &Finding| {
            vec![
                f.check.to_string(),
                paint(f.severity),
                match f.breaks {
                    Some(Breaks::Now) => "now".to_string(),
                    Some(Breaks::WhenStrict) => "when STRICT".to_string(),
                    None => String::new(),
                },
                f.object.clone(),
                Self::source(f),
                Self::message(f),
            ]
        };
        // SOURCE (file:line of -f objects) only when some finding has one.
        if self.findings.iter().any(|f| f.origin.is_some()) {
            crate::output::write_table(
                out,
                ["CHECK", "SEVERITY", "BREAKS", "OBJECT", "SOURCE", "MESSAGE"],
                self.findings
                    .iter()
                    .map(|f| <[String; 6]>::try_from(row(f)).expect("six columns")),
            )?;
        } else {
            crate::output::write_table(
                out,
                ["CHECK", "SEVERITY", "BREAKS", "OBJECT", "MESSAGE"],
                self.findings.iter().map(|f| {
                    let mut r = row(f);
                    r.remove(4);
                    <[String; 5]>::try_from(r).expect("five columns")
                }),
            )?;
        }
        let hinted: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| matches!(f.severity, Severity::Fail | Severity::Warn) && !f.hint.is_empty())
            .collect();
        if !hinted.is_empty() {
            writeln!(out)?;
            for f in hinted {
                let object = if f.object.is_empty() {
                    String::new()
                } else {
                    format!(" {}", f.object)
                };
                let context = f
                    .context
                    .as_ref()
                    .map_or(String::new(), |c| format!("[{c}] "));
                writeln!(out, "hint ({context}{}{object}): {}", f.check, f.hint)?;
            }
        }
        let s = self.summary();
        if self.bundle_only {
            // No cluster or manifests: nothing to say of auto mTLS, Pilot or namespaces.
            return writeln!(
                out,
                "\nbundle checks only (no cluster or manifests given) · era {} · {} pass, {} warn, {} fail, {} skip",
                self.era_text(),
                s.pass,
                s.warn,
                s.fail,
                s.skip
            );
        }
        writeln!(
            out,
            "\nera {}{} · auto mTLS {} · {} pass, {} warn, {} fail, {} skip",
            self.era_text(),
            self.release
                .as_ref()
                .map_or(String::new(), |r| format!(" · judged as Pilot {r}")),
            if self.auto_mtls { "on" } else { "off" },
            s.pass,
            s.warn,
            s.fail,
            s.skip
        )?;
        if self.namespaces.is_empty() {
            return Ok(());
        }
        writeln!(out)?;
        crate::output::write_table(
            out,
            ["NAMESPACE", "STRICT", "BLOCKED BY", "WARNINGS"],
            self.namespaces.iter().map(|n| {
                let state = if n.ready { "ready" } else { "blocked" };
                [
                    n.name.clone(),
                    if color {
                        format!("{}{state}{RESET}", if n.ready { GREEN } else { RED })
                    } else {
                        state.to_string()
                    },
                    n.blockers.join(", "),
                    n.warnings.join(", "),
                ]
            }),
        )
    }

    /// The report as a SARIF 2.1.0 log: one rule per check, one result per fail/warn, located
    /// at the manifest file and line the object came from when known.
    pub fn sarif(&self) -> serde_json::Value {
        use serde_json::json;
        // Every check, then `--prometheus`'s, which is no snapshot check.
        let ids: Vec<(&str, &str)> = checks::ALL
            .iter()
            .map(|c| (c.id(), c.describe()))
            .chain([(super::traffic::CHECK, super::traffic::DESCRIBE)])
            .collect();
        let rules: Vec<_> = ids
            .iter()
            .map(|(id, describe)| {
                json!({
                    "id": id,
                    "name": id,
                    "shortDescription": {"text": describe},
                    "fullDescription": {"text": describe},
                    "defaultConfiguration": {"level": "error"},
                    "helpUri": "https://github.com/meshvm/meshvm#doctor",
                })
            })
            .collect();
        let results: Vec<_> = self
            .findings
            .iter()
            .filter(|f| matches!(f.severity, Severity::Fail | Severity::Warn))
            .map(|f| {
                let index = ids.iter().position(|(id, _)| *id == f.check).unwrap_or(0);
                let mut text = Self::message(f);
                if !f.object.is_empty() {
                    text = format!("{}: {text}", f.object);
                }
                if !f.hint.is_empty() {
                    text = format!("{text}\nhint: {}", f.hint);
                }
                let mut result = json!({
                    "ruleId": f.check,
                    "ruleIndex": index,
                    "level": if f.severity == Severity::Fail { "error" } else { "warning" },
                    "message": {"text": text},
                });
                if let Some(origin) = f.origin.as_ref().or(self.fallback_origin.as_ref()) {
                    let uri = origin.file.to_string_lossy().replace('\\', "/");
                    result["locations"] = json!([{
                        "physicalLocation": {
                            "artifactLocation": {"uri": uri},
                            "region": {"startLine": origin.line},
                        },
                        "logicalLocations": [{"fullyQualifiedName": f.object, "kind": "resource"}],
                    }]);
                }
                result
            })
            .collect();
        let mut log = json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "kubectl-meshvm-doctor",
                    "informationUri": "https://github.com/meshvm/meshvm",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }},
                "results": results,
            }],
        });
        // Notes (input set aside) are the run's tool notifications, located when they can be.
        if !self.notes.is_empty() {
            let notifications: Vec<_> = self
                .notes
                .iter()
                .map(|n| {
                    let mut v = json!({"level": "note", "message": {"text": n.message}});
                    if let Some(o) = &n.origin {
                        let mut location = json!({"physicalLocation": {"artifactLocation": {
                            "uri": o.file.to_string_lossy().replace('\\', "/"),
                        }}});
                        if o.line > 0 {
                            location["physicalLocation"]["region"] = json!({"startLine": o.line});
                        }
                        v["locations"] = json!([location]);
                    }
                    v
                })
                .collect();
            log["runs"][0]["invocations"] = json!([{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }]);
        }
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut fail = Finding::fail("mtls.default-dr", "no mesh-wide rule").hint("apply it");
        fail.origin = Some(Origin {
            file: "gitops/istio.yaml".into(),
            line: 7,
        });
        fail.object = "DestinationRule istio-system/default".into();
        fail.breaks = Some(Breaks::WhenStrict);
        let warn = Finding::warn("mtls.dr-overlap", "two rules")
            .ns("bookinfo")
            .now();
        let findings = vec![
            Finding::pass("ca.plugged", "ok"),
            fail,
            warn,
            Finding::skip("bundle.files", "no --bundle given"),
        ];
        let namespaces = Report::readiness(["bookinfo".to_string()], &findings);
        Report {
            era: Some(Era::Legacy),
            auto_mtls: false,
            release: None,
            findings,
            fallback_origin: None,
            namespaces,
            notes: Vec::new(),
            bundle_only: false,
        }
    }

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let mut out = Vec::new();
        report().write(&mut out, Format::Json, false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "era": "legacy",
                "autoMtls": false,
                "summary": {"pass": 1, "warn": 1, "fail": 1, "skip": 1},
                "findings": [
                    {"check": "ca.plugged", "severity": "pass", "object": "", "message": "ok", "hint": "", "namespaces": []},
                    {"check": "mtls.default-dr", "severity": "fail", "object": "DestinationRule istio-system/default", "source": {"file": "gitops/istio.yaml", "line": 7}, "message": "no mesh-wide rule", "hint": "apply it", "namespaces": [], "breaks": "when-strict"},
                    {"check": "mtls.dr-overlap", "severity": "warn", "object": "", "message": "two rules", "hint": "", "namespaces": ["bookinfo"], "breaks": "now"},
                    {"check": "bundle.files", "severity": "skip", "object": "", "message": "no --bundle given", "hint": "", "namespaces": []},
                ],
                "namespaces": [
                    {"name": "bookinfo", "ready": false, "blockers": ["mtls.default-dr"], "warnings": ["mtls.dr-overlap"]},
                ],
            })
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.find("\"era\"").unwrap() < text.find("\"autoMtls\"").unwrap(),
            "key order as documented"
        );
    }

    #[test]
    fn json_carries_source_context_and_notes_as_fields() {
        let mut r = report();
        r.findings[2].context = Some("west".into());
        r.notes.push(Note {
            origin: Some(Origin {
                file: "gitops/values.yaml".into(),
                line: 1,
            }),
            message: "document 1 skipped: no apiVersion and no kind: a Helm values file".into(),
        });
        let mut out = Vec::new();
        r.write(&mut out, Format::Json, false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let found = &v["findings"];
        assert_eq!(
            found[1]["source"],
            serde_json::json!({"file": "gitops/istio.yaml", "line": 7})
        );
        assert!(found[0].get("source").is_none() && found[0].get("context").is_none());
        assert_eq!(found[2]["context"], "west");
        assert_eq!(
            found[2]["message"], "two rules",
            "the context is not in the message"
        );
        assert_eq!(
            v["notes"],
            serde_json::json!([{"source": {"file": "gitops/values.yaml", "line": 1}, "message": "document 1 skipped: no apiVersion and no kind: a Helm values file"}])
        );
        let mut yaml = Vec::new();
        r.write(&mut yaml, Format::Yaml, false).unwrap();
        let from_yaml: serde_json::Value =
            serde_saphyr::from_str(std::str::from_utf8(&yaml).unwrap()).unwrap();
        assert_eq!(from_yaml, v);
        // The table: SOURCE beside the object, the context as a prefix.
        let mut table = Vec::new();
        r.write(&mut table, Format::Table, false).unwrap();
        let table = String::from_utf8(table).unwrap();
        let header = table.lines().next().unwrap();
        assert!(
            header.find("OBJECT").unwrap() < header.find("SOURCE").unwrap()
                && header.find("SOURCE").unwrap() < header.find("MESSAGE").unwrap(),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.contains("DestinationRule istio-system/default   gitops/istio.yaml:7")),
            "{table}"
        );
        assert!(table.contains("[west] two rules"), "{table}");
        // SARIF: the notes are the run's notifications.
        let sarif = r.sarif();
        let n = &sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"][0];
        assert_eq!(n["level"], "note");
        assert_eq!(
            n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "gitops/values.yaml"
        );
        // Live findings have no origin: no SOURCE column.
        let mut live = report();
        live.findings.iter_mut().for_each(|f| f.origin = None);
        let mut table = Vec::new();
        live.write(&mut table, Format::Table, false).unwrap();
        assert!(!String::from_utf8(table).unwrap().contains("SOURCE"));
    }

    #[test]
    fn bundle_only_says_nothing_of_the_mesh() {
        let mut r = report();
        r.findings.retain(|f| f.check.starts_with("bundle."));
        r.namespaces.clear();
        r.bundle_only = true;
        let mut out = Vec::new();
        r.write(&mut out, Format::Table, false).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(
            !table.contains("auto mTLS") && !table.contains("NAMESPACE"),
            "{table}"
        );
        assert!(
            table.contains("bundle checks only (no cluster or manifests given) · era legacy · 0 pass, 0 warn, 0 fail, 1 skip"),
            "{table}"
        );
        let mut out = Vec::new();
        r.write(&mut out, Format::Json, false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("autoMtls").is_none(), "{v:#}");
    }

    #[test]
    fn yaml_is_the_same_document() {
        let mut json = Vec::new();
        let mut yaml = Vec::new();
        report().write(&mut json, Format::Json, false).unwrap();
        report().write(&mut yaml, Format::Yaml, false).unwrap();
        let a: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let b: serde_json::Value =
            serde_saphyr::from_str(std::str::from_utf8(&yaml).unwrap()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn table_colours_only_when_told() {
        let mut plain = Vec::new();
        report().write(&mut plain, Format::Table, false).unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert!(
            plain.contains("CHECK")
                && plain.contains("MESSAGE")
                && plain.contains("mtls.default-dr")
        );
        assert!(
            plain.contains("hint (mtls.default-dr DestinationRule istio-system/default): apply it")
        );
        assert!(plain.contains("era legacy · auto mTLS off · 1 pass, 1 warn, 1 fail, 1 skip"));
        assert!(plain.contains("bookinfo    blocked"), "{plain}");
        assert!(!plain.contains('\x1b'));
        assert!(
            plain.lines().all(|l| l == l.trim_end()),
            "no trailing blanks"
        );
        let mut colour = Vec::new();
        report().write(&mut colour, Format::Table, true).unwrap();
        assert!(String::from_utf8(colour).unwrap().contains("\x1b[31mfail"));
    }

    #[test]
    fn sarif_locates_file_findings() {
        let v = report().sarif();
        assert_eq!(v["version"], "2.1.0");
        let run = &v["runs"][0];
        assert_eq!(
            run["tool"]["driver"]["rules"].as_array().unwrap().len(),
            checks::ALL.len() + 1,
            "every check and traffic.plaintext"
        );
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "pass and skip are not results");
        assert_eq!(results[0]["level"], "error");
        assert_eq!(
            results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "gitops/istio.yaml"
        );
        assert_eq!(
            results[0]["locations"][0]["physicalLocation"]["region"]["startLine"],
            7
        );
        let idx = results[0]["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(run["tool"]["driver"]["rules"][idx]["id"], "mtls.default-dr");
        assert_eq!(results[1]["level"], "warning");
        assert!(results[1].get("locations").is_none());
        let mut r = report();
        r.fallback_origin = Some(Origin {
            file: "gitops/a.yaml".into(),
            line: 1,
        });
        let v = r.sarif();
        assert_eq!(
            v["runs"][0]["results"][1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "gitops/a.yaml"
        );
    }

    #[test]
    fn the_release_judged_is_reported() {
        let mut r = report();
        r.release = Some("1.4 (legacy era)".into());
        let mut out = Vec::new();
        r.write(&mut out, Format::Json, false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["pilotRelease"], "1.4 (legacy era)");
        let mut out = Vec::new();
        r.write(&mut out, Format::Table, false).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("era legacy · judged as Pilot 1.4 (legacy era) · auto mTLS off")
        );
    }

    #[test]
    fn readiness_blocks_on_failures_only_and_mesh_wide_failures_block_all() {
        let findings = vec![
            Finding::fail("mtls.probes", "p").ns("shop"),
            Finding::warn("mtls.plaintext-clients", "w").ns("batch"),
            Finding::warn("mtls.dr-overlap", "mesh-wide warning"),
            Finding::pass("ca.plugged", "ok").ns("other"),
        ];
        let rows = Report::readiness(["batch".into(), "shop".into(), "quiet".into()], &findings);
        let row = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(rows.len(), 3, "a pass names no row: {rows:?}");
        assert!(!row("shop").ready);
        assert_eq!(row("shop").blockers, ["mtls.probes"]);
        assert!(row("batch").ready, "warnings do not block");
        assert_eq!(
            row("batch").warnings,
            ["mtls.plaintext-clients", "mtls.dr-overlap"]
        );
        assert!(row("quiet").ready && row("quiet").blockers.is_empty());
        let mut findings = findings;
        findings.push(Finding::fail("mtls.default-dr", "no mesh-wide rule"));
        let rows = Report::readiness(["quiet".into()], &findings);
        let quiet = rows.iter().find(|r| r.name == "quiet").unwrap();
        assert_eq!(quiet.blockers, ["mtls.default-dr"]);
        // A namespace only a finding names still gets a row.
        assert!(rows.iter().any(|r| r.name == "shop" && !r.ready));
    }

    #[test]
    fn plaintext_seen_blocks_its_namespace_but_no_evidence_blocks_none() {
        let findings = vec![
            Finding::warn(super::super::traffic::CHECK, "plaintext into bookinfo").ns("bookinfo"),
            Finding::warn(super::super::traffic::CHECK, "no evidence: down"),
        ];
        let rows = Report::readiness(["bookinfo".into(), "legacy".into()], &findings);
        assert_eq!(rows[0].name, "bookinfo");
        assert!(!rows[0].ready);
        assert_eq!(rows[0].blockers, ["traffic.plaintext"]);
        assert!(rows[1].ready, "{rows:?}");
        assert_eq!(rows[1].warnings, ["traffic.plaintext"]);
    }

    #[test]
    fn every_output_ends_with_the_namespaces() {
        let mut table = Vec::new();
        report().write(&mut table, Format::Table, false).unwrap();
        let table = String::from_utf8(table).unwrap();
        let last = table.lines().last().unwrap();
        assert!(
            last.starts_with("bookinfo")
                && last.contains("blocked")
                && last.contains("mtls.default-dr")
                && last.contains("mtls.dr-overlap"),
            "{table}"
        );
        assert!(
            table.contains("NAMESPACE") && table.contains("when STRICT"),
            "{table}"
        );
        let mut yaml = Vec::new();
        report().write(&mut yaml, Format::Yaml, false).unwrap();
        let yaml = String::from_utf8(yaml).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(v["namespaces"][0]["ready"], false);
        assert!(yaml.rfind("namespaces:").unwrap() > yaml.rfind("findings:").unwrap());
        // SARIF is unchanged: no namespaces.
        assert!(
            report()
                .sarif()
                .to_string()
                .find("\"namespaces\"")
                .is_none()
        );
    }

    #[test]
    fn outcome() {
        assert_eq!(report().outcome(FailOn::Fail), Outcome::Findings);
        let mut r = report();
        r.findings.retain(|f| f.severity != Severity::Fail);
        assert_eq!(r.outcome(FailOn::Fail), Outcome::Success);
        assert_eq!(r.outcome(FailOn::Warn), Outcome::Findings);
    }
}
