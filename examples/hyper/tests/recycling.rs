//! example-hyper recycled under load by a real gpe-master: the shared test
//! (`examples/support/shared/recycling.rs`).

#[path = "../../support/tests_common.rs"]
mod common;
#[path = "../../support/shared/recycling.rs"]
mod shared;

const BIN: &str = env!("CARGO_BIN_EXE_example-hyper");

#[test]
fn recycling_under_load_keeps_accepting() {
    shared::recycling_under_load_keeps_accepting(BIN);
}
