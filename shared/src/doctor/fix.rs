//! `--fix`: the additive DestinationRules of the runbook's Gotchas, planned as objects.
