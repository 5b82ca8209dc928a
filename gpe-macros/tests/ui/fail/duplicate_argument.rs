struct W;
#[gpe_core::instrument_worker(handler = handle, handler = handle)]
impl W {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
