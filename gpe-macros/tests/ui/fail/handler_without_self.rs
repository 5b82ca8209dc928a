struct W;
#[gpe_core::instrument_worker(sync)]
impl W {
    fn handle(_c: gpe_core::runtime::Connection) {}
}
fn main() {}
