struct W;
#[gpe_core::instrument_worker(sync)]
impl W {
    fn serve(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
