use std::sync::Mutex;

struct Drain {
    jobs: Mutex<Vec<u32>>,
}

#[derive(Debug)]
struct Odd;

#[gpe_core::instrument_worker(threads = 4, source = next, prefix = "app_", labels(service = "drain"), buckets = [0.01, 0.1, 1], error_label = "odd")]
impl Drain {
    fn next(&self) -> Option<u32> {
        self.jobs.lock().unwrap().pop()
    }

    fn handle(&self, job: u32) -> Result<u32, Odd> {
        if job % 2 == 1 { Err(Odd) } else { Ok(job) }
    }
}

fn main() {
    let _run: fn(Drain) -> std::process::ExitCode = Drain::run;
}
