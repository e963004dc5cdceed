//! meshvm library integration tests: one binary, one module per area.

mod bundle_install;
mod bundle_renew;
mod bundle_sim;
mod compression;
mod connect;
mod doctor_conformance;
mod doctor_fix;
mod doctor_strict;
mod doctor_wait;
mod hint_style;
mod layers;
mod parsers_prop;
mod reads;
mod register;
mod register_lifecycle;
mod round_trips;
mod write;
