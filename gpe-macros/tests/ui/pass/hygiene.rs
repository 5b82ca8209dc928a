// The generated code must not depend on names the user can shadow.
#![allow(dead_code, non_camel_case_types)]

mod std {}
mod core {}
mod gpe_core {}
type Result = ();
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Arc;
struct ExitCode;

struct Worker;

#[::gpe_core::instrument_worker(threads = 2, source = next)]
impl Worker {
    fn next(&self) -> ::core::option::Option<u8> {
        ::core::option::Option::None
    }

    fn handle(&self, _job: u8) -> ::core::result::Result<(), ::std::io::Error> {
        ::core::result::Result::Ok(())
    }
}

#[::gpe_core::instrument_worker(async, source = next)]
impl Worker2 {
    async fn next(&self) -> ::core::option::Option<u8> {
        ::core::option::Option::None
    }

    async fn handle(&self, _job: u8) {}
}
struct Worker2;

fn main() {
    let _a: fn(Worker) -> ::std::process::ExitCode = Worker::run;
    let _b: fn(Worker2) -> ::std::process::ExitCode = Worker2::run;
}
