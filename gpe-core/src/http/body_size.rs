//! [`RequestBodyBytes`]: the size of a request body that came without one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A count of the request body bytes read so far, shared by what reads the body and the
/// request's tracker, which reads it when the request is recorded
/// ([`RequestTracker::count_request_body`](super::RequestTracker::count_request_body)). A
/// framework adapter hands one to whatever wraps the request body (gpe-tower's
/// `count_request_body`, gpe-actix's payload wrapper).
///
/// ```
/// let count = gpe_core::http::RequestBodyBytes::default();
/// count.add(512);
/// count.clone().add(100);
/// assert_eq!(count.get(), 612);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequestBodyBytes(Arc<AtomicU64>);

impl RequestBodyBytes {
    /// Add `n` bytes read.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The bytes read so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
