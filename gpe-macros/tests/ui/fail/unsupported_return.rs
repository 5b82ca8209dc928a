// A handler returns `()` or a `Result<T, E>` with `E: Debug`.
struct A;
#[gpe_core::instrument_worker(sync)]
impl A {
    fn handle(&self, _c: gpe_core::runtime::Connection) -> bool {
        true
    }
}

struct B;
#[gpe_core::instrument_worker(async)]
impl B {
    async fn handle(&self, _c: tokio::net::TcpStream) -> Option<()> {
        None
    }
}

struct NotDebug;
struct C;
#[gpe_core::instrument_worker(threads = 2, source = next)]
impl C {
    fn next(&self) -> Option<u8> {
        None
    }
    fn handle(&self, _job: u8) -> Result<(), NotDebug> {
        Err(NotDebug)
    }
}

#[gpe_core::instrument_worker(sync)]
struct D;
impl D {
    fn handle(&self, _c: gpe_core::runtime::Connection) -> u32 {
        0
    }
}

fn main() {}
