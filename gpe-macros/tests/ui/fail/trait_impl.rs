struct W;
trait Handler { fn handle(&self, c: gpe_core::runtime::Connection); }
#[gpe_core::instrument_worker(sync)]
impl Handler for W {
    fn handle(&self, _c: gpe_core::runtime::Connection) {}
}
fn main() {}
