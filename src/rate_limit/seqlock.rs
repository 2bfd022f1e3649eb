//! [`SeqLock`]: settings kept in several atomics, read as one unit without
//! a lock.
//!
//! A limiter's settings (GCRA's interval and burst, the counter's limit and
//! window) do not fit one atomic word together, and a check that read them
//! one by one while a handle changed them could mix an old value with a new
//! one: a limit nobody configured. A version counter guards them instead. A
//! writer makes it odd, writes, and makes it even again; a reader notes the
//! version, reads, and accepts what it read only if the version is still the
//! same. Readers never write to shared memory, so checks on many threads do
//! not contend: on x86 the check costs two plain loads more than reading the
//! settings unguarded (acquire loads and fences are free there). An
//! `ArcSwap` of the settings would cost a read-modify-write per check; a
//! mutex, a lock per check.

use crate::sync::{AtomicU64, Ordering, fence, yield_now};

/// A version counter guarding settings stored in atomics of their own. The
/// settings are written only inside [`write`](Self::write) and read with
/// [`Ordering::Relaxed`] between [`begin_read`](Self::begin_read) and
/// [`unchanged`](Self::unchanged).
#[derive(Debug, Default)]
pub(crate) struct SeqLock {
    /// Even when the settings are whole, odd while a writer changes them.
    version: AtomicU64,
}

impl SeqLock {
    /// Starts a read: the version to check the reads against, once no
    /// write is under way.
    #[inline]
    pub(crate) fn begin_read(&self) -> u64 {
        loop {
            let version = self.version.load(Ordering::Acquire);
            if version & 1 == 0 {
                return version;
            }
            // A writer stores a few words and leaves.
            yield_now();
        }
    }

    /// Whether no write has begun since [`begin_read`](Self::begin_read)
    /// returned `version`: then every atomic read since is from one whole
    /// state, the one that version stands for.
    #[inline]
    pub(crate) fn unchanged(&self, version: u64) -> bool {
        // Orders the reads before the check: had one of them seen a write,
        // the check sees that writer's odd version (or a later one).
        fence(Ordering::Acquire);
        self.version.load(Ordering::Relaxed) == version
    }

    /// Reads with `f` until it has read one whole state.
    #[inline]
    pub(crate) fn read<T>(&self, f: impl Fn() -> T) -> T {
        loop {
            let version = self.begin_read();
            let read = f();
            if self.unchanged(version) {
                return read;
            }
        }
    }

    /// Writes with `f`, alone: readers meanwhile read again. `f` only
    /// stores and updates atomics; it cannot panic, which would leave the
    /// version odd.
    pub(crate) fn write<T>(&self, f: impl FnOnce() -> T) -> T {
        let version = loop {
            let version = self.version.load(Ordering::Relaxed);
            // Acquire: this writer sees what the one before it wrote.
            if version & 1 == 0
                && self
                    .version
                    .compare_exchange_weak(
                        version,
                        version.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                break version;
            }
            yield_now();
        };
        // Orders the odd version before the writes (the other half of the
        // fence in `unchanged`).
        fence(Ordering::Release);
        let written = f();
        self.version
            .store(version.wrapping_add(2), Ordering::Release);
        written
    }
}
