//! `--help` of the dispatcher and of every verb, as snapshots under `tests/snapshots/help/`:
//! a flag or example that changes shows up in review. Regenerate with `SNAPSHOTS=overwrite`.

use std::path::Path;
use std::process::Command;

use crate::common::{self, BINARIES};

fn snapshot_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/help"))
}

#[test]
fn help_of_every_binary_matches_its_snapshot() {
    let assert = snapbox::Assert::new().action_env("SNAPSHOTS");
    let mut failures = Vec::new();
    for (name, path) in BINARIES
        .iter()
        .filter(|(name, _)| name.starts_with("kubectl-meshvm"))
    {
        let out = Command::new(path)
            .arg("--help")
            .env("NO_COLOR", "1")
            .env("COLUMNS", "100")
            .env_remove(meshvm::dispatch::VERSION_ENV)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name} --help");
        let file = snapshot_dir().join(format!("{name}.txt"));
        if let Err(e) = assert.try_eq(
            None,
            snapbox::Data::from(common::text(&out.stdout)),
            snapbox::Data::read_from(&file, None),
        ) {
            failures.push(format!(
                "{name}: --help differs from {}:\n{e}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
