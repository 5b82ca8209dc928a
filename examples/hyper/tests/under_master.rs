//! example-hyper as 4 workers of a real gpe-master: the shared tests
//! (`examples/support/shared/under_master.rs`).

#[path = "../../support/tests_common.rs"]
mod common;
#[path = "../../support/shared/under_master.rs"]
mod shared;

shared::tests!(env!("CARGO_BIN_EXE_example-hyper"));
