//! Prints the sum of `gunicorn_worker_requests_total` over every file of a store directory
//! (argument, else `PROMETHEUS_MULTIPROC_DIR`): run.sh's check that the gpe runs recorded every
//! request.
fn main() -> anyhow::Result<()> {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => gpe_core::Store::from_env()?.dir().to_owned(),
    };
    let families = gpe_core::MultiProcessCollector::new(&dir).gather();
    let text = gpe_core::expose::encode_text(&families)?;
    println!("{}", gpe_http_bench::sum_requests(&text));
    Ok(())
}
