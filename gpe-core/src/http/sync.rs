//! The atomics gpe-core's own concurrency logic is built on, swapped for loom's under
//! `--cfg gpe_loom` so that the loom models (see [`budget`](super::budget)) explore every
//! interleaving of the real code (the pattern of tokio's `src/loom/mod.rs`).
//!
//! The switch is `gpe_loom`, not the customary `loom`: `RUSTFLAGS` reach every crate of the
//! build, and tokio compiles without `tokio::net` under `cfg(loom)` (tokio-rs/tokio#5500), which
//! gpe-core's server needs. Our own name changes our code only.
//!
//! Only the series cap goes through here: everything else is plain locks, gpe-core handles or
//! `OnceLock`s. Run the models with `.ci/loom`; a `gpe_loom` build is for them only (loom
//! atomics panic outside `loom::model`).

#[cfg(gpe_loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(gpe_loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
