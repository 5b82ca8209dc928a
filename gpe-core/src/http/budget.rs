//! The per-family series cap: label combinations reserved against a maximum, lock-free.

use super::sync::{AtomicUsize, Ordering};

/// How many label combinations this process has created, out of at most `max`.
///
/// A combination is reserved before it is created. A thread that then finds another thread
/// created the same combination first (a lost race) gives its reservation back, so `used` ends
/// equal to the number of combinations that exist and never exceeds `max`.
#[derive(Debug)]
pub(crate) struct SeriesBudget {
    used: AtomicUsize,
    max: usize,
}

impl SeriesBudget {
    /// An empty budget of `max` combinations.
    pub(crate) fn new(max: usize) -> Self {
        SeriesBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Combinations reserved so far.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether every combination is reserved.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.used() >= self.max
    }

    /// Reserve one combination; `false` (and nothing reserved) once `max` are.
    ///
    /// One read-modify-write on one atomic: all of them are totally ordered, so `Relaxed` is
    /// enough for the count, which guards nothing else.
    pub(crate) fn reserve(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give back a reservation made by [`reserve`](Self::reserve) that was not used.
    pub(crate) fn release(&self) {
        self.used.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(gpe_loom)))]
mod tests {
    use super::SeriesBudget;

    #[test]
    fn reserves_up_to_max_and_releases() {
        let b = SeriesBudget::new(2);
        assert!(!b.is_exhausted());
        assert!(b.reserve());
        assert!(b.reserve());
        assert!(b.is_exhausted());
        assert!(!b.reserve());
        assert_eq!(b.used(), 2);
        b.release();
        assert_eq!(b.used(), 1);
        assert!(b.reserve());
        assert!(!b.reserve());
        assert_eq!(b.max(), 2);
    }

    #[test]
    fn threads_never_exceed_max() {
        let b = SeriesBudget::new(100);
        let won: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..1000).filter(|_| b.reserve()).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 100);
        assert_eq!(b.used(), 100);
    }
}

/// Loom models: every interleaving (and every value a `Relaxed` load may see) of concurrent
/// reservations and releases; for three threads, every one with at most `PREEMPTIONS`
/// preemptions (unbounded, that model takes six minutes). Run by `.ci/loom`:
/// `RUSTFLAGS="--cfg gpe_loom" cargo test -p gpe-core --lib --release loom`.
#[cfg(all(test, gpe_loom))]
mod loom_tests {
    use super::SeriesBudget;
    use loom::sync::Arc;
    use loom::thread;

    /// The preemption bound of the three-thread model (about 5 s in release).
    const PREEMPTIONS: usize = 4;

    /// Two threads reserve against a cap of one: exactly one wins.
    #[test]
    fn loom_one_slot_two_threads() {
        loom::model(|| {
            let b = Arc::new(SeriesBudget::new(1));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    thread::spawn(move || b.reserve())
                })
                .collect();
            let won = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|w| *w)
                .count();
            assert_eq!(won, 1);
            assert_eq!(b.used(), 1);
            assert!(b.is_exhausted());
        });
    }

    /// Cap two, three threads: two keep their reservation, the third gives it back after
    /// losing a race (as `RequestMetrics::done` does). The count never exceeds the cap, ends at
    /// reservations minus releases, and a reservation only fails when the cap is really held.
    #[test]
    fn loom_reserve_and_release_after_lost_race() {
        let mut model = loom::model::Builder::new();
        // Bounded as tokio's CI bounds its models, unless LOOM_MAX_PREEMPTIONS says otherwise.
        model.preemption_bound.get_or_insert(PREEMPTIONS);
        model.check(|| {
            let max = 2;
            let b = Arc::new(SeriesBudget::new(max));
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let b = b.clone();
                    thread::spawn(move || {
                        let won = b.reserve();
                        let used = b.used();
                        assert!(used <= max, "used {used} > max {max}");
                        let released = won && i == 2;
                        if released {
                            b.release();
                        }
                        (won, released)
                    })
                })
                .collect();
            let results: Vec<(bool, bool)> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            let won = results.iter().filter(|r| r.0).count();
            let released = results.iter().filter(|r| r.1).count();
            assert_eq!(b.used(), won - released);
            assert!(b.used() <= max);
            // Failing needs `max` reservations held at that moment, so at least `max` won.
            assert!(
                won >= max,
                "only {won} of 3 reservations won with max {max}"
            );
        });
    }
}
