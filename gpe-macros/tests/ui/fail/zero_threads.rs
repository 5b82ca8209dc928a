struct W;
#[gpe_core::instrument_worker(threads = 0)]
impl W {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
