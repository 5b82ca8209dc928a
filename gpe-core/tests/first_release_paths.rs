//! The module paths of the first release still name the same items after the reshaping into
//! concept folders (ARCHITECTURE.md, "Crates and folders"): code written against them builds.

use gpe_core::prometheus::proto::MetricFamily;

type Encode = fn(&[MetricFamily]) -> Result<String, gpe_core::expose::ExpositionError>;

#[test]
fn old_paths_name_the_new_items() {
    let old: Encode = gpe_core::exposition::encode_text;
    let new: Encode = gpe_core::expose::encode_text;
    assert_eq!(old(&[]).unwrap(), new(&[]).unwrap());

    assert_eq!(
        gpe_core::compact::LOCK_FILE,
        gpe_core::collect::compact::LOCK_FILE
    );
    assert_eq!(gpe_core::notify::RETIRE, gpe_core::worker::notify::RETIRE);

    // `RestartReason` is now the one `StopReason` of every worker kind.
    let reason: gpe_core::worker_metrics::RestartReason =
        gpe_core::worker::lifecycle::StopReason::Quit;
    assert_eq!(reason.as_str(), "quit");
    let stop: gpe_core::shutdown::StopReason = reason;
    assert!(stop.is_fast());

    let config = gpe_core::config::Config::from_vars(Vec::<(String, String)>::new()).unwrap();
    let _: &gpe_core::expose::config::Config = &config;
    let _: Option<gpe_core::server::ServerConfig> = None::<gpe_core::expose::server::ServerConfig>;
    let _: Option<gpe_core::adopt::Adopter> = None::<gpe_core::metrics::adopt::Adopter>;
    let _: Option<gpe_core::collector::LivePids> = None::<gpe_core::collect::LivePids>;
}
