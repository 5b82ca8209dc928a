// Worker kinds are `sync`, `threads = N` and `async`, written on their own.
struct A;
#[gpe_core::instrument_worker(gevent)]
impl A {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

struct B;
#[gpe_core::instrument_worker(kind = sync)]
impl B {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

struct C;
#[gpe_core::instrument_worker(threads = "4")]
impl C {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

struct D;
#[gpe_core::instrument_worker(threads, prefix = "app_")]
impl D {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

fn main() {}
