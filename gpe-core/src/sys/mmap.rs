//! Shared-memory slots: the only `unsafe` of the value store.
//!
//! A [`Region`] is a `MAP_SHARED` writable mapping of a whole `.db` file, only ever accessed
//! through raw pointers (never as a Rust slice), so that concurrent atomic updates from several
//! threads and the owner's appends never alias a `&mut`. Regions are reference counted and never
//! unmapped while a [`Slot`] points into one; when a file grows, a new, larger region is mapped
//! over the same file and both see the same pages.

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;

/// A writable shared mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Region {
    map: MmapRaw,
}

impl Region {
    /// Map all of `file` (which must be at least 8 bytes and opened read-write).
    pub(crate) fn map(file: &File) -> std::io::Result<Arc<Region>> {
        let map = MmapRaw::map_raw(file)?;
        if map.len() < 8 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "file is too short to map",
            ));
        }
        Ok(Arc::new(Region { map }))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn used_atomic(&self) -> &AtomicU32 {
        // SAFETY: the mapping is page aligned and at least 8 bytes long (checked in `map`), so
        // offset 0 is a valid, 4-byte aligned u32 that lives as long as `self`. It is only
        // accessed atomically in this process; other processes read it with plain reads, which
        // is the same contract Python's writer offers.
        unsafe { &*(self.map.as_mut_ptr() as *const AtomicU32) }
    }

    /// The used length, as published.
    pub(crate) fn used(&self) -> usize {
        self.used_atomic().load(Ordering::Acquire) as usize
    }

    /// Publish the used length, after the bytes below it are written.
    pub(crate) fn publish_used(&self, used: usize) {
        self.used_atomic().store(used as u32, Ordering::Release);
    }

    /// Copy `bytes` to `offset`.
    ///
    /// Returns `false` (and writes nothing) when the range is out of bounds.
    pub(crate) fn write_unpublished(&self, offset: usize, bytes: &[u8]) -> bool {
        let Some(end) = offset.checked_add(bytes.len()) else {
            return false;
        };
        if offset < 8 || end > self.len() {
            return false;
        }
        // SAFETY: `offset..end` is inside the mapping (checked above) and lies at or past the
        // published used length, which the single writer (the store, under its mutex) owns: no
        // `Slot` points into it yet and no other thread of this process touches it. The source
        // is a distinct Rust slice, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                bytes.len(),
            );
        }
        true
    }

    /// A slot over the 8 bytes at `offset`, or `None` when not 8-aligned and in bounds.
    pub(crate) fn slot(self: &Arc<Self>, offset: usize) -> Option<Slot> {
        if !offset.is_multiple_of(8) || offset < 8 || offset.checked_add(16)? > self.len() {
            return None;
        }
        // SAFETY: `offset + 16 <= len` (checked above), so the pointer stays inside the mapping.
        let value = unsafe { self.map.as_mut_ptr().add(offset) } as *const AtomicU64;
        Some(Slot {
            _region: Arc::clone(self),
            value,
        })
    }
}

/// A value (and the timestamp after it) in shared memory: 16 bytes at an 8-aligned offset.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Keeps the mapping `value` points into alive (never read).
    _region: Arc<Region>,
    /// The value's word in the mapping (the timestamp is the next one), computed once: updates
    /// are on every request's path.
    value: *const AtomicU64,
}

// SAFETY: `value` points into the shared mapping that `region` keeps alive, and is only used
// for atomic accesses, which any thread may make; the pointer itself is never written.
unsafe impl Send for Slot {}
// SAFETY: as for `Send`: shared references only ever make atomic accesses through `value`.
unsafe impl Sync for Slot {}

impl Slot {
    fn atomic(&self, extra: usize) -> &AtomicU64 {
        debug_assert!(extra == 0 || extra == 8);
        // SAFETY: `Region::slot` checked that the offset is 8-aligned and that `offset + 16` is
        // within the mapping, which is page aligned, so both words (`extra` is 0 or 8) are
        // valid, aligned u64s. The region is kept mapped by the `Arc` for as long as `self`
        // lives. In this process the bytes are only accessed through atomics (never through a
        // slice or a `&mut`).
        unsafe { &*self.value.cast::<u8>().add(extra).cast::<AtomicU64>() }
    }

    /// Add `v`: one compare-and-swap loop on the value's bits.
    #[inline]
    pub(crate) fn add(&self, v: f64) {
        let a = self.atomic(0);
        let mut cur = a.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match a.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Add 1 to the value word read as a `u64` count (gpe's own files only: Python reads the
    /// word as an `f64`): one `fetch_add`, no compare-and-swap loop.
    #[inline]
    pub(crate) fn inc_count(&self) {
        self.atomic(0).fetch_add(1, Ordering::Relaxed);
    }

    /// The value word read as a `u64` count ([`inc_count`](Self::inc_count)).
    #[inline]
    pub(crate) fn count(&self) -> u64 {
        self.atomic(0).load(Ordering::Relaxed)
    }

    /// Store `v`.
    #[inline]
    pub(crate) fn set(&self, v: f64) {
        self.atomic(0).store(v.to_bits(), Ordering::Relaxed);
    }

    /// Store `v` and its timestamp (seconds since the epoch).
    #[inline]
    pub(crate) fn set_with_timestamp(&self, v: f64, ts: f64) {
        self.atomic(0).store(v.to_bits(), Ordering::Relaxed);
        self.atomic(8).store(ts.to_bits(), Ordering::Relaxed);
    }

    /// Store the timestamp alone (the value is left as it is).
    #[inline]
    pub(crate) fn set_timestamp(&self, ts: f64) {
        self.atomic(8).store(ts.to_bits(), Ordering::Relaxed);
    }

    /// The raw bits of word `word` (0: the value, 1: the timestamp), read with `order`.
    #[inline]
    pub(crate) fn load_word(&self, word: usize, order: Ordering) -> u64 {
        self.atomic(word * 8).load(order)
    }

    /// Store raw bits into word `word` (0: the value, 1: the timestamp) with `order`.
    #[inline]
    pub(crate) fn store_word(&self, word: usize, bits: u64, order: Ordering) {
        self.atomic(word * 8).store(bits, order);
    }

    /// Compare-and-swap the raw bits of the value word: `true` when it held `current`.
    #[inline]
    pub(crate) fn claim_word(&self, current: u64, new: u64) -> bool {
        self.atomic(0)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The current value.
    #[inline]
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.atomic(0).load(Ordering::Relaxed))
    }
}
