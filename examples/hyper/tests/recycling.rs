//! example-hyper recycled under load by a real gpe-master: the shared test
//! (`examples/support/shared/recycling.rs`).

#[path = "../../support/tests_common.rs"]
mod common;
#[path = "../../support/shared/recycling.rs"]
mod shared;

shared::tests!(env!("CARGO_BIN_EXE_example-hyper"));
