//! Compile tests of `#[instrument_worker]`: every kind compiles; every misuse is a clear error at
//! the offending span (committed `.stderr`; refresh with `TRYBUILD=overwrite` when the toolchain
//! changes).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
