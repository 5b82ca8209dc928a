//! example-actix on its own: the shared standalone tests (`examples/support/shared/standalone.rs`).

#[path = "../../support/tests_common.rs"]
mod common;
#[path = "../../support/shared/standalone.rs"]
mod shared;

const BIN: &str = env!("CARGO_BIN_EXE_example-actix");

#[test]
fn serves_and_counts_exactly() {
    shared::serves_and_counts_exactly(BIN);
}

#[test]
fn term_drains_in_flight_requests_and_quit_does_not() {
    shared::term_drains_in_flight_requests_and_quit_does_not(BIN, "");
}

#[test]
fn serves_on_a_unix_socket() {
    shared::serves_on_a_unix_socket(BIN);
}
