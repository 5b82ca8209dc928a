// On a struct the macro cannot see the handler: the compiler checks the call it generates.
#[gpe_core::instrument_worker(threads = 2, source = next)]
struct Two;

impl Two {
    fn next(&self) -> Option<u8> {
        None
    }

    fn handle(&self, _a: u8, _b: u8) {}
}

#[gpe_core::instrument_worker(sync)]
struct NoHandler;

fn main() {}
