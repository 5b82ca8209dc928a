//! One exemplar's place in a process's store: four entries of the `.db` format, written as a
//! sequence lock so that a reader never takes half of one exemplar and half of another.
//!
//! | entry | value word | timestamp word |
//! |---|---|---|
//! | 0 | `end`: the sequence number of the last complete write | the observed value |
//! | 1 | trace id, first 8 bytes | trace id, last 8 bytes |
//! | 2 | span id | when (seconds since the epoch) |
//! | 3 | `begin`: the sequence number of the last write started | (unused) |
//!
//! The entries are made in this order, so they lie in this order in the file. A writer claims
//! `begin` (n -> n+1), writes the data, then sets `end` to n+1. The collector copies the file
//! front to back: it reads `end` before the data and `begin` after, and keeps the exemplar only
//! when both are equal and not 0. A writer that died mid-write leaves them unequal: that
//! exemplar is never read, and no other is affected.

use std::sync::atomic::Ordering;

use super::{Exemplar, TraceContext};
use crate::store::dbfile::Kind;
use crate::store::SeriesId;
use crate::sys::mmap::Slot;

/// The label the store adds to an exemplar's keys: which of the four entries it is.
pub(crate) const PART: &str = "__exemplar";

/// The four entries of one exemplar.
#[derive(Debug)]
pub(crate) struct ExemplarSlot {
    parts: [Slot; 4],
}

impl ExemplarSlot {
    /// The exemplar of sample `sample` of series `id`, with the `extra` labels (a bucket's
    /// `le`); `None` (logged once) when the store cannot make its entries.
    pub(crate) fn new(
        id: &SeriesId,
        sample: &str,
        extra: &[(&str, &str)],
        help: &str,
    ) -> Option<ExemplarSlot> {
        let part = |n: &str| {
            let labels: Vec<(&str, &str)> = extra.iter().copied().chain([(PART, n)]).collect();
            id.slot(Kind::Exemplar, sample, &labels, help)
        };
        Some(ExemplarSlot {
            parts: [part("0")?, part("1")?, part("2")?, part("3")?],
        })
    }

    /// Record `value` of `trace` at `now` (seconds since the epoch). Skipped (the exemplar is a
    /// sample, not a count) while another thread of this process writes the same one.
    #[inline]
    pub(crate) fn record(&self, trace: &TraceContext, value: f64, now: f64) {
        let [end, trace_part, span_part, begin] = &self.parts;
        let n = begin.load_word(0, Ordering::Acquire);
        if end.load_word(0, Ordering::Acquire) != n || !begin.claim_word(n, n + 1) {
            return;
        }
        let (hi, lo) = trace.trace_id.split_at(8);
        end.store_word(1, value.to_bits(), Ordering::Relaxed);
        trace_part.store_word(
            0,
            u64::from_be_bytes(hi.try_into().unwrap_or_default()),
            Ordering::Relaxed,
        );
        trace_part.store_word(
            1,
            u64::from_be_bytes(lo.try_into().unwrap_or_default()),
            Ordering::Relaxed,
        );
        span_part.store_word(0, u64::from_be_bytes(trace.span_id), Ordering::Relaxed);
        span_part.store_word(1, now.to_bits(), Ordering::Relaxed);
        end.store_word(0, n + 1, Ordering::Release);
    }

    /// This process's exemplar, if one was written.
    pub(crate) fn get(&self) -> Option<Exemplar> {
        let words = |s: &Slot| {
            (
                f64::from_bits(s.load_word(0, Ordering::Acquire)),
                f64::from_bits(s.load_word(1, Ordering::Acquire)),
            )
        };
        assemble(self.parts.each_ref().map(words))
    }
}

/// An exemplar from its four entries' (value, timestamp) pairs as read from a file, in file
/// order; `None` when it was never written or was being written.
pub(crate) fn assemble(parts: [(f64, f64); 4]) -> Option<Exemplar> {
    let [(end, value), (hi, lo), (span, when), (begin, _)] = parts;
    let (end, begin) = (end.to_bits(), begin.to_bits());
    if end == 0 || end != begin {
        return None;
    }
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&hi.to_bits().to_be_bytes());
    trace_id[8..].copy_from_slice(&lo.to_bits().to_be_bytes());
    Some(Exemplar {
        trace: TraceContext {
            trace_id,
            span_id: span.to_bits().to_be_bytes(),
        },
        value,
        timestamp: when,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_written_exemplar_is_not_read() {
        let trace = TraceContext {
            trace_id: *b"0123456789abcdef",
            span_id: *b"spanspan",
        };
        let write = |seq_end: u64, seq_begin: u64| {
            let (hi, lo) = trace.trace_id.split_at(8);
            [
                (f64::from_bits(seq_end), 0.25),
                (
                    f64::from_bits(u64::from_be_bytes(hi.try_into().unwrap())),
                    f64::from_bits(u64::from_be_bytes(lo.try_into().unwrap())),
                ),
                (f64::from_bits(u64::from_be_bytes(trace.span_id)), 1.7e9),
                (f64::from_bits(seq_begin), 0.0),
            ]
        };
        let e = assemble(write(3, 3)).unwrap();
        assert_eq!((e.trace, e.value, e.timestamp), (trace, 0.25, 1.7e9));
        assert!(assemble(write(3, 4)).is_none(), "a write in progress");
        assert!(assemble(write(0, 0)).is_none(), "never written");
    }
}
