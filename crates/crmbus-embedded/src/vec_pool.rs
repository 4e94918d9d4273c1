//! [`VecPool`]: buffers a partition stages frames in, handed back once their round has
//! written them, so the next round stages into memory already mapped.
//!
//! A round that stages many events grows its staging buffer to hundreds of KiB or more.
//! Freed after every round and allocated again for the next, memory of that size goes
//! back to the allocator's arenas, which give it back to the system; the next round then
//! takes page faults and has the kernel zero every page before it writes a byte. Under
//! `crmbus bench log` (64 producers, batches of 64) that zeroing was 40% of the process's
//! time. The pool keeps a bounded number of bytes of such buffers for reuse instead.

use std::sync::Mutex;

use crmbus::sync::LockExt;

/// Buffers kept for reuse, up to a bound on the bytes they hold.
pub struct VecPool<T> {
    free: Mutex<Free<T>>,
    max_bytes: usize,
}

struct Free<T> {
    buffers: Vec<Vec<T>>,
    /// Bytes of capacity `buffers` hold.
    bytes: usize,
}

impl<T> VecPool<T> {
    /// An empty pool that keeps buffers of up to `max_bytes` of capacity in all.
    pub const fn new(max_bytes: usize) -> Self {
        VecPool {
            free: Mutex::new(Free {
                buffers: Vec::new(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    /// An empty buffer: one handed back earlier (with its capacity), or a new one.
    pub fn take(&self) -> Vec<T> {
        let mut free = self.free.locked();
        match free.buffers.pop() {
            Some(buffer) => {
                free.bytes -= Self::bytes_of(&buffer);
                buffer
            }
            None => Vec::new(),
        }
    }

    /// Hands `buffer` back for reuse (emptied); dropped instead if the pool is full.
    pub fn give(&self, mut buffer: Vec<T>) {
        buffer.clear();
        let bytes = Self::bytes_of(&buffer);
        if bytes == 0 {
            return;
        }
        let mut free = self.free.locked();
        if free.bytes + bytes <= self.max_bytes {
            free.bytes += bytes;
            free.buffers.push(buffer);
        }
    }

    /// Bytes of capacity the pool holds now.
    pub fn held_bytes(&self) -> usize {
        self.free.locked().bytes
    }

    fn bytes_of(buffer: &Vec<T>) -> usize {
        buffer.capacity() * std::mem::size_of::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::VecPool;

    #[test]
    fn a_buffer_handed_back_is_taken_again_empty_with_its_capacity() {
        let pool: VecPool<u8> = VecPool::new(1 << 20);
        let mut b = pool.take();
        assert_eq!(b.capacity(), 0);
        b.extend_from_slice(&[7; 1000]);
        let cap = b.capacity();
        pool.give(b);
        assert_eq!(pool.held_bytes(), cap);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
        assert_eq!(pool.held_bytes(), 0);
    }

    #[test]
    fn the_pool_holds_no_more_than_its_bound() {
        let pool: VecPool<u64> = VecPool::new(1000);
        pool.give(Vec::with_capacity(100)); // 800 bytes: kept
        pool.give(Vec::with_capacity(100)); // would be 1600: dropped
        pool.give(Vec::with_capacity(10)); // 880: kept
        pool.give(Vec::new()); // holds nothing: not kept
        assert_eq!(pool.held_bytes(), 880);
        let caps: Vec<usize> = (0..3).map(|_| pool.take().capacity()).collect();
        assert_eq!(caps, vec![10, 100, 0]);
    }
}
