//! One process's native buckets of one series: a slot per bucket, made on the bucket's first
//! observation and then found without a lock.
//!
//! Indices of values between 2^-64 and 2^64 (the range of any duration or size) live in a table
//! of lazily made chunks of 32 slots: an observation there is two loads and the slot's atomic
//! add. Other indices go to a map behind a mutex.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::sys::mmap::Slot;

const CHUNK: usize = 32;
/// The table covers the values whose binary exponent is within this much of 0.
const EXPONENT_SPAN: i32 = 64;

type Chunk = Box<[OnceLock<Slot>; CHUNK]>;

/// The slots of one side (positive or negative) of one series.
pub(crate) struct Table {
    /// The index the first slot of the first chunk stands for.
    low: i32,
    chunks: Box<[OnceLock<Chunk>]>,
    overflow: Mutex<HashMap<i32, Slot>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("low", &self.low)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl Table {
    pub(crate) fn new(schema: i8) -> Table {
        // Index range of |v| in [2^-64, 2^64] at this schema.
        let per_power = if schema > 0 { 1i32 << schema } else { 1 };
        let span = if schema > 0 {
            EXPONENT_SPAN * per_power
        } else {
            EXPONENT_SPAN >> -i32::from(schema)
        };
        let len = (2 * span + 2) as usize;
        let chunks = len.div_ceil(CHUNK);
        Table {
            low: -span - 1,
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            overflow: Mutex::new(HashMap::new()),
        }
    }

    /// Add 1 to bucket `index`, making its slot with `make` on first use.
    #[inline]
    pub(crate) fn inc(&self, index: i32, make: impl FnOnce(i32) -> Option<Slot>) {
        let at = index.wrapping_sub(self.low) as u32 as usize;
        // The common case: the bucket was seen before; two loads, then the count.
        if let Some(slot) = self
            .chunks
            .get(at / CHUNK)
            .and_then(OnceLock::get)
            .and_then(|chunk| chunk[at % CHUNK].get())
        {
            slot.inc_count();
            return;
        }
        self.inc_first(index, at, make);
    }

    /// [`inc`](Self::inc) of a bucket not seen before in this process, or out of the table.
    #[cold]
    #[inline(never)]
    fn inc_first(&self, index: i32, at: usize, make: impl FnOnce(i32) -> Option<Slot>) {
        if let Some(cell) = self.chunks.get(at / CHUNK) {
            let chunk = cell.get_or_init(|| Box::new([const { OnceLock::new() }; CHUNK]));
            let cell = &chunk[at % CHUNK];
            let slot = match cell.get() {
                Some(slot) => slot,
                // Two threads may both make it: the store hands both the same slot.
                None => match make(index) {
                    Some(slot) => cell.get_or_init(|| slot),
                    None => return,
                },
            };
            slot.inc_count();
            return;
        }
        let mut overflow = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = overflow.get(&index) {
            slot.inc_count();
        } else if let Some(slot) = make(index) {
            slot.inc_count();
            overflow.insert(index, slot);
        }
    }

    /// This process's populated buckets (index, count), in no particular order.
    pub(crate) fn counts(&self) -> Vec<(i32, f64)> {
        let mut out = Vec::new();
        for (c, cell) in self.chunks.iter().enumerate() {
            if let Some(chunk) = cell.get() {
                for (p, slot) in chunk.iter().enumerate() {
                    if let Some(slot) = slot.get() {
                        out.push((self.low + (c * CHUNK + p) as i32, slot.count() as f64));
                    }
                }
            }
        }
        let overflow = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(overflow.iter().map(|(&i, s)| (i, s.count() as f64)));
        out
    }
}
