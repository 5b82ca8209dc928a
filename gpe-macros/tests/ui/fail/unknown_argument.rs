struct W;
#[gpe_core::instrument_worker(sync, workers = 4)]
impl W {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
