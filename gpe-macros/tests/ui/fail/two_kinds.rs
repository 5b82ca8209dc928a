struct W;
#[gpe_core::instrument_worker(sync, threads = 2)]
impl W {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
