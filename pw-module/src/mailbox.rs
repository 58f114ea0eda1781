//! A one-slot mailbox from the main thread to the data thread: the main
//! loop posts a value (a node's new settings), the data thread takes it
//! at its next turn. Neither side blocks, spins or allocates: a post that
//! meets the data thread reading returns `false`, and the main loop posts
//! again at its next tick.

use std::cell::UnsafeCell;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const FULL: u8 = 2;
const READING: u8 = 3;

/// The mailbox. One producer (the main thread), one consumer (the data
/// thread); a newer post replaces one not yet taken.
pub struct Mailbox<T: Copy> {
    state: AtomicU8,
    slot: UnsafeCell<Option<T>>,
}

// SAFETY: the slot is touched only by the side that moved `state` to
// WRITING or READING, which the compare-exchanges make exclusive.
unsafe impl<T: Copy + Send> Sync for Mailbox<T> {}

impl<T: Copy> Mailbox<T> {
    /// An empty mailbox.
    pub fn new() -> Self {
        Mailbox {
            state: AtomicU8::new(EMPTY),
            slot: UnsafeCell::new(None),
        }
    }

    /// Posts `v` (replacing one not taken yet); `false` when the data
    /// thread is reading right now (post again later).
    pub fn post(&self, v: T) -> bool {
        let claimed = [EMPTY, FULL].into_iter().any(|from| {
            self.state
                .compare_exchange(from, WRITING, Acquire, Relaxed)
                .is_ok()
        });
        if !claimed {
            return false;
        }
        // SAFETY: WRITING is ours (the exchange above): the consumer
        // touches the slot only from READING, which it cannot reach now.
        unsafe { *self.slot.get() = Some(v) };
        self.state.store(FULL, Release);
        true
    }

    /// The value posted since the last take, if any.
    pub fn take(&self) -> Option<T> {
        if self
            .state
            .compare_exchange(FULL, READING, Acquire, Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: READING is ours: the producer touches the slot only from
        // WRITING, which it cannot reach now.
        let v = unsafe { (*self.slot.get()).take() };
        self.state.store(EMPTY, Release);
        v
    }
}

impl<T: Copy> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_post_is_taken_once() {
        let m = Mailbox::new();
        assert_eq!(m.take(), None::<u32>);
        assert!(m.post(1));
        assert!(m.post(2));
        assert_eq!(m.take(), Some(2));
        assert_eq!(m.take(), None);
    }

    #[test]
    fn two_threads_never_tear_a_value() {
        let m = std::sync::Arc::new(Mailbox::new());
        let p = std::sync::Arc::clone(&m);
        let producer = std::thread::spawn(move || {
            let mut posted = 0u64;
            for i in 0..200_000u64 {
                if p.post((i, i.wrapping_mul(7))) {
                    posted += 1;
                }
            }
            posted
        });
        let mut taken = 0u64;
        let mut last = 0u64;
        while !producer.is_finished() || taken == 0 {
            if let Some((a, b)) = m.take() {
                assert_eq!(b, a.wrapping_mul(7), "torn");
                assert!(a >= last, "older after newer");
                last = a;
                taken += 1;
            }
        }
        assert!(producer.join().unwrap() > 0);
        assert!(taken > 0);
    }
}
