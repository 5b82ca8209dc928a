struct W;
#[gpe_core::instrument_worker(sync, buckets = [1.0, 0.5])]
impl W {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
