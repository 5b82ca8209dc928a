// Every argument may be given once (`handler` twice: duplicate_argument.rs).
struct A;
#[gpe_core::instrument_worker(threads = 2, threads = 4)]
impl A {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

struct B;
#[gpe_core::instrument_worker(prefix = "a_", prefix = "b_")]
impl B {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

struct C;
#[gpe_core::instrument_worker(sync, sync)]
impl C {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

struct D;
#[gpe_core::instrument_worker(labels(a = "1"), labels(b = "2"))]
impl D {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

struct E;
#[gpe_core::instrument_worker(source = next, source = next)]
impl E {
    fn next(&self) -> Option<u8> {
        None
    }
    fn handle(&self, _job: u8) {}
}

struct F;
#[gpe_core::instrument_worker(buckets = [1], error_label = "x", buckets = [2], error_label = "y")]
impl F {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}

fn main() {}
