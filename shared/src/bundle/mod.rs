//! `kubectl meshvm bundle`: everything the VM needs, as files and a deterministic archive.
