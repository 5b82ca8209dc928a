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
struct Outcome;
struct Options;
struct Kind;
struct Connection;
struct AsyncConnection;
struct Self_;
fn run_blocking() {}
fn run_async_connections() {}

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

// The default kind and job source: connections on the inherited listeners.
struct Conns;

#[::gpe_core::instrument_worker]
impl Conns {
    fn handle(
        &self,
        _conn: ::gpe_core::runtime::Connection,
    ) -> ::core::result::Result<(), ::std::io::Error> {
        ::core::result::Result::Ok(())
    }
}

struct AsyncConns;

#[::gpe_core::instrument_worker(async, prefix = "h_", labels(a = "b"), buckets = [1, 2.5], error_label = "e")]
impl AsyncConns {
    async fn handle(
        &self,
        _conn: ::gpe_core::runtime::AsyncConnection,
    ) -> ::core::result::Result<u8, ::std::fmt::Error> {
        ::core::result::Result::Ok(1)
    }
}

// The struct form, with and without a source.
#[::gpe_core::instrument_worker(threads = 3, source = next, handler = work)]
struct OnStruct;

impl OnStruct {
    fn next(&self) -> ::core::option::Option<u8> {
        ::core::option::Option::None
    }

    fn work(&self, _job: u8) {}
}

#[::gpe_core::instrument_worker(async)]
struct AsyncOnStruct;

impl AsyncOnStruct {
    async fn handle(&self, _conn: ::tokio::net::TcpStream) {}
}

#[::gpe_core::instrument_worker(sync)]
struct SyncOnStruct;

impl SyncOnStruct {
    fn handle(&self, _conn: ::gpe_core::runtime::Connection) {}
}

fn main() {
    let _a: fn(Worker) -> ::std::process::ExitCode = Worker::run;
    let _b: fn(Worker2) -> ::std::process::ExitCode = Worker2::run;
    let _c: fn(Conns) -> ::std::process::ExitCode = Conns::run;
    let _d: fn(AsyncConns) -> ::std::process::ExitCode = AsyncConns::run;
    let _e: fn(OnStruct) -> ::std::process::ExitCode = OnStruct::run;
    let _f: fn(AsyncOnStruct) -> ::std::process::ExitCode = AsyncOnStruct::run;
    let _g: fn(SyncOnStruct) -> ::std::process::ExitCode = SyncOnStruct::run;
}
