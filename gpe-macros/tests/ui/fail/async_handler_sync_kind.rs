struct W;
#[gpe_core::instrument_worker(sync)]
impl W {
    async fn handle(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
