//! `src/expose/protobuf/client_model.rs` is what prost-build makes of `proto/metrics.proto`
//! (compiled by protox: no `protoc` needed). This test makes it again and compares, so the
//! committed code cannot drift from the schema. After editing the schema, rewrite it with
//! `UPDATE_PROTO=1 cargo test -p gpe-core --test proto_generated`.

use std::path::Path;

#[test]
fn the_generated_protobuf_code_matches_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let descriptors = protox::compile(["metrics.proto"], [root.join("proto")])
        .unwrap_or_else(|e| panic!("compiling proto/metrics.proto: {e}"));
    let out = tempfile::tempdir().unwrap();
    prost_build::Config::new()
        .out_dir(out.path())
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the Rust types: {e}"));
    let made = std::fs::read_to_string(out.path().join("io.prometheus.client.rs")).unwrap();
    let committed_path = root.join("src/expose/protobuf/client_model.rs");
    if std::env::var_os("UPDATE_PROTO").is_some() {
        std::fs::write(&committed_path, &made).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == made,
        "{} is not what prost-build makes of proto/metrics.proto; rerun with UPDATE_PROTO=1",
        committed_path.display()
    );
}
