//! example-actix as 4 workers of a real gpe-master: the shared tests
//! (`examples/support/shared/under_master.rs`).

#[path = "../../support/tests_common.rs"]
mod common;
#[path = "../../support/shared/under_master.rs"]
mod shared;

const BIN: &str = env!("CARGO_BIN_EXE_example-actix");

#[test]
fn four_workers_add_up_exactly_under_load() {
    shared::four_workers_add_up_exactly_under_load(BIN);
}

#[test]
fn hup_under_keep_alive_load_loses_nothing() {
    shared::hup_under_keep_alive_load_loses_nothing(BIN);
}

#[test]
fn max_requests_replaces_workers_and_quit_stops_fast() {
    shared::max_requests_replaces_workers_and_quit_stops_fast(BIN);
}
