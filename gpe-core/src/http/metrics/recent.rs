//! The endpoints a thread looked up last, per [`RequestMetrics`](super::RequestMetrics) instance: a request to one of
//! them finds its series by a string compare, without the map's lock and hash. A route's series
//! is never removed from the map, so a remembered one stays the right one.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::EndpointSeries;

const SLOTS: usize = 4;

/// A new instance's id (never 0, the id of an empty slot).
pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Default)]
struct Recent {
    slots: [(u64, Option<Arc<EndpointSeries>>); SLOTS],
    next: usize,
}

thread_local!(static RECENT: RefCell<Recent> = RefCell::default());

/// The series of `endpoint` in instance `id`, if this thread looked it up lately.
#[inline]
pub(super) fn find(id: u64, endpoint: &str) -> Option<Arc<EndpointSeries>> {
    RECENT
        .try_with(|r| {
            r.borrow().slots.iter().find_map(|(slot_id, s)| {
                s.as_ref()
                    .filter(|s| *slot_id == id && *s.endpoint == *endpoint)
                    .cloned()
            })
        })
        .ok()
        .flatten()
}

/// Remember `series` of instance `id` for this thread (the oldest slot goes).
pub(super) fn remember(id: u64, series: &Arc<EndpointSeries>) {
    let _ = RECENT.try_with(|r| {
        let mut r = r.borrow_mut();
        let at = r.next;
        r.slots[at] = (id, Some(Arc::clone(series)));
        r.next = (at + 1) % SLOTS;
    });
}
