//! Which connections the server serves, so that clients holding connections open cannot keep a
//! real scrape out (slowloris).
//!
//! At most `max` connections are served at once. A connection is *idle* while no request of it
//! is being answered: from its accept until its first request head is read (and through a TLS
//! handshake), and between the requests of a keep-alive connection. When a new connection
//! arrives at the cap, the connection idle the longest is closed to make room; only when every
//! connection is inside a request does the new one wait for a slot. A scraper sends its request
//! as soon as it connects, so it is the newest idle connection for a moment only, and the ones a
//! slowloris client keeps half-open are closed before it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The connection slots of one server.
#[derive(Debug)]
pub(super) struct Admission {
    max: usize,
    state: Mutex<State>,
    /// A slot was freed.
    freed: Notify,
}

/// What closes a connection to make room.
#[derive(Debug, Default)]
struct Closing {
    notify: Notify,
    /// Its slot went to another connection.
    done: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    /// The idle connections, oldest first (by the moment they became idle).
    idle: BTreeMap<u64, Arc<Closing>>,
    next: u64,
}

impl Admission {
    pub(super) fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max: max.max(1),
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection just accepted: a free one, or the one of the connection idle the
    /// longest, which is told to close; waits only while every connection is inside a request.
    pub(super) async fn admit(self: &Arc<Self>) -> Ticket {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a slot freed in between is not missed.
            freed.as_mut().enable();
            {
                let mut s = self.state();
                let room = if s.open < self.max {
                    true
                } else if let Some((_, closing)) = s.idle.pop_first() {
                    // Its slot passes to the new connection now; it frees none when it ends.
                    closing.done.store(true, Ordering::Relaxed);
                    closing.notify.notify_one();
                    s.open -= 1;
                    true
                } else {
                    false
                };
                if room {
                    s.open += 1;
                    let ticket = Ticket {
                        admission: Arc::clone(self),
                        closing: Arc::default(),
                        idle_key: Mutex::new(None),
                    };
                    ticket.register_idle(&mut s);
                    return ticket;
                }
            }
            freed.await;
        }
    }

    /// Connections served now (for tests).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.state().open
    }
}

/// One connection's slot; frees it when dropped.
#[derive(Debug)]
pub(super) struct Ticket {
    admission: Arc<Admission>,
    /// Notified when the connection is to close to make room.
    closing: Arc<Closing>,
    /// Its key among the idle connections, while it is idle.
    idle_key: Mutex<Option<u64>>,
}

impl Ticket {
    fn key(&self) -> MutexGuard<'_, Option<u64>> {
        self.idle_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register_idle(&self, s: &mut State) {
        let key = s.next;
        s.next += 1;
        s.idle.insert(key, Arc::clone(&self.closing));
        *self.key() = Some(key);
    }

    /// A request is being answered: not to be closed for room.
    pub(super) fn busy(&self) {
        if let Some(key) = self.key().take() {
            self.admission.state().idle.remove(&key);
        }
    }

    /// Its request is answered: idle again, the newest idle connection.
    pub(super) fn idle(&self) {
        let mut s = self.admission.state();
        if self.key().is_none() && !self.closing.done.load(Ordering::Relaxed) {
            self.register_idle(&mut s);
            drop(s);
            // A connection waiting for a slot can take this one's now.
            self.admission.freed.notify_one();
        }
    }

    /// Resolves when the connection is to close to make room for a new one.
    pub(super) async fn closing(&self) {
        self.closing.notify.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.admission.state();
        if let Some(key) = self.key().take() {
            s.idle.remove(&key);
        }
        // Closed for room, its slot went to the connection that took it; else it frees it.
        if !self.closing.done.load(Ordering::Relaxed) {
            s.open -= 1;
        }
        drop(s);
        self.admission.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        rt().block_on(async {
            let a = Admission::new(2);
            let first = a.admit().await;
            let second = a.admit().await;
            assert_eq!(a.open(), 2);
            // A third: the first (idle longest) is told to close, and the count stays at the cap.
            let third = a.admit().await;
            tokio::time::timeout(Duration::from_secs(1), first.closing())
                .await
                .expect("the oldest idle connection is closed");
            assert_eq!(a.open(), 2);
            drop(first); // its slot went to the third
            assert_eq!(a.open(), 2);
            // Busy connections are never closed for room: with both busy, a new one waits.
            second.busy();
            third.busy();
            let waiting = tokio::spawn({
                let a = Arc::clone(&a);
                async move { a.admit().await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!waiting.is_finished());
            // Idle again: the longest idle (second, idle before third) makes room.
            second.idle();
            third.idle();
            let fourth = tokio::time::timeout(Duration::from_secs(1), waiting)
                .await
                .expect("admitted once one is idle")
                .unwrap();
            tokio::time::timeout(Duration::from_secs(1), second.closing())
                .await
                .expect("the longest idle makes room");
            drop((second, third, fourth));
            assert_eq!(a.open(), 0);
        });
    }

    #[test]
    fn a_freed_slot_is_taken_without_closing_anyone() {
        rt().block_on(async {
            let a = Admission::new(1);
            let only = a.admit().await;
            only.busy();
            let waiting = tokio::spawn({
                let a = Arc::clone(&a);
                async move { a.admit().await }
            });
            drop(only);
            let next = tokio::time::timeout(Duration::from_secs(1), waiting)
                .await
                .expect("admitted once the slot is free")
                .unwrap();
            assert_eq!(a.open(), 1);
            drop(next);
            assert_eq!(a.open(), 0);
        });
    }
}
