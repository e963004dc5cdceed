//! Fixture builders for check tests.
