//! example-axum on its own: the shared standalone tests (`examples/support/shared/standalone.rs`).

#[path = "../../support/tests_common.rs"]
mod common;
#[path = "../../support/shared/standalone.rs"]
mod shared;

shared::tests!(env!("CARGO_BIN_EXE_example-axum"), "/slow");
