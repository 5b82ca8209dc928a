//! Compile-time guarantees of the public API: handles are `Send + Sync + Clone` and can be
//! shared across threads and tasks (tokio `tests/async_send_sync.rs` is the model).

use gpe_core::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec, LivePids, MultiProcessCollector,
    Store,
};

fn send_sync<T: Send + Sync + 'static>() {}
fn clone<T: Clone>() {}

#[test]
fn handles_are_send_sync_and_clone() {
    send_sync::<Store>();
    send_sync::<Counter>();
    send_sync::<CounterVec>();
    send_sync::<Gauge>();
    send_sync::<GaugeVec>();
    send_sync::<Histogram>();
    send_sync::<HistogramVec>();
    send_sync::<LivePids>();
    send_sync::<MultiProcessCollector>();
    send_sync::<gpe_core::Error>();
    clone::<Store>();
    clone::<Counter>();
    clone::<CounterVec>();
    clone::<Gauge>();
    clone::<GaugeVec>();
    clone::<Histogram>();
    clone::<HistogramVec>();
}

#[test]
fn a_growing_file_keeps_old_handles_valid() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = Counter::new("first_total", "First.", &store).unwrap();
    let v = CounterVec::new(prometheus::Opts::new("many_total", "Many."), &["i"], &store).unwrap();
    // Far more than the initial 64 KiB: the file is remapped several times.
    for i in 0..5000 {
        v.with_label_values(&[&i.to_string()]).unwrap().inc();
        first.inc();
    }
    assert_eq!(first.get(), 5000.0);
    let families = MultiProcessCollector::new(dir.path()).gather();
    let many = families.iter().find(|f| f.name() == "many_total").unwrap();
    assert_eq!(many.get_metric().len(), 5000);
    let first = families.iter().find(|f| f.name() == "first_total").unwrap();
    assert_eq!(first.get_metric()[0].get_counter().get_value(), 5000.0);
    assert!(
        std::fs::metadata(
            dir.path()
                .join(format!("counter_{}.db", std::process::id()))
        )
        .unwrap()
        .len()
            > 65536
    );
}
