struct W;
#[gpe_core::instrument_worker(sync)]
impl W {
    fn handle(&self, _a: u8, _b: u8) {}
}
fn main() {}
