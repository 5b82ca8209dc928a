#[gpe_core::instrument_worker(sync)]
fn handle() {}
fn main() {}
