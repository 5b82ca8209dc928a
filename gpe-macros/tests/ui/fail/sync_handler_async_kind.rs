struct W;
#[gpe_core::instrument_worker(async)]
impl W {
    fn handle(&self, _c: tokio::net::TcpStream) {}
}
fn main() {}
