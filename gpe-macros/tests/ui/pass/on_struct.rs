#[gpe_core::instrument_worker(threads = 2, source = next)]
struct Counter {
    left: std::sync::atomic::AtomicU32,
}

impl Counter {
    fn next(&self) -> Option<u32> {
        let left = self.left.load(std::sync::atomic::Ordering::Relaxed);
        (left > 0).then(|| self.left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed))
    }

    fn handle(&self, _job: u32) {}
}

fn main() {
    let _run: fn(Counter) -> std::process::ExitCode = Counter::run;
}
