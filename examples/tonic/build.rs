//! Generates the gRPC server and client of `proto/greeter.proto`, with protox (a protobuf
//! compiler in Rust) instead of `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(["proto/greeter.proto"], ["proto"])?;
    tonic_prost_build::compile_fds(files)?;
    println!("cargo:rerun-if-changed=proto/greeter.proto");
    Ok(())
}
