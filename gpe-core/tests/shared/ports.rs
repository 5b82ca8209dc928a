//! Free loopback ports for test servers, below the kernel's ephemeral range. Included by path by
//! gpe-core's, gpe-master's and the examples' test helpers.
//!
//! A server on a port of the ephemeral range (what binding port 0 gives) can meet a connection
//! that used the same port, moments before, as its *client* side: the old connection is still in
//! TIME_WAIT under the same four addresses, and the new one is reset. Load tests that open a
//! connection per request (1,500 in a second) right after other such tests hit it (CI did, twice
//! in one run). Ports below the range are never handed out as client ports, so that cannot
//! happen, and nothing but another test can take the port between the probe and the bind.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port of 127.0.0.1 that was free a moment ago, in 10000 up to the ephemeral range.
pub fn free_port() -> u16 {
    let (low, high) = (10_000u32, u32::from(ephemeral_start()).max(10_001));
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for i in 0..2_000u32 {
        let port = low + seed.wrapping_add(i.wrapping_mul(7_919)) % (high - low);
        let port = u16::try_from(port).expect("below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port of 127.0.0.1 in {low}..{high}");
}
