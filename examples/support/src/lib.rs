//! The test harness the example services share, and nothing else: the examples' `main.rs` files
//! use only the public crates (gpe-core, gpe-tower, gpe-actix), as a user's service would.
//!
//! - `tests_common.rs`: start a server under a watchdog, plain HTTP/1.1 over std, scrape and sum
//!   an exposition; included by path (`#[path = "../../support/tests_common.rs"]`) into each
//!   example's test binaries, so that it runs with that example's binary.
//! - `shared/`: the tests every HTTP example passes (standalone, under gpe-master, recycling
//!   under load), instantiated by one `shared::tests!` line per example.
//!
//! This crate has no code of its own: it exists so that the workspace's `examples/*` glob finds
//! a package in this folder.
