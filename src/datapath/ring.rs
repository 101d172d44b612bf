//! A fixed-capacity byte ring, filled by `readv` and emptied by `writev`, whose storage is borrowed from a
//! [`BufPool`] only while it holds data.
//!
//! One ring sits in each direction of a pair. Its capacity is the whole of the memory that direction may
//! use: when it is full the pump stops reading and the kernel's receive window closes on the sender, which
//! is how backpressure reaches the peer. An idle direction owns no storage at all (a few words for the
//! indices), so ten thousand idle pairs cost kilobytes, not gigabytes; the storage goes back to the pool the
//! moment the ring drains.
//!
//! Vectored I/O matters here: once the ring has wrapped, its free space (or its data) is two slices, and a
//! plain `read`/`write` would need two syscalls where `readv`/`writev` needs one.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};

/// A bounded stock of equally sized buffers, so that pairs taking and returning storage on every burst
/// do not call the allocator each time, and so that memory goes back after a peak.
#[derive(Debug)]
pub struct BufPool {
    /// Size of every buffer handed out; it is the ring capacity.
    size: usize,
    /// Buffers returned and not yet reused.
    free: Vec<Box<[u8]>>,
    /// Most buffers kept in `free`; the rest are freed on return, so RSS falls after a peak.
    max_free: usize,
}

/// How much idle storage the pool may hold on to, in bytes.
const POOL_RETAIN_BYTES: usize = 2 << 20;

impl BufPool {
    /// A pool of `size`-byte buffers that keeps at most 2 MiB of them spare (none at all when a single
    /// buffer is larger than that).
    pub(crate) fn new(size: usize) -> BufPool {
        BufPool {
            size,
            free: Vec::new(),
            max_free: POOL_RETAIN_BYTES / size,
        }
    }

    /// The capacity of every buffer (and so every ring) this pool serves.
    pub(super) fn buffer_size(&self) -> usize {
        self.size
    }

    fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    fn give(&mut self, buf: Box<[u8]>) {
        if self.free.len() < self.max_free {
            self.free.push(buf);
        }
    }

    /// Buffers currently held spare (what the tests check the pool against).
    #[cfg(test)]
    pub(super) fn spare(&self) -> usize {
        self.free.len()
    }
}

/// A byte ring. Empty rings own no storage.
#[derive(Debug, Default)]
pub(super) struct Ring {
    /// Storage, present only while `len > 0` or during a read into it.
    buf: Option<Box<[u8]>>,
    /// Index of the oldest byte.
    head: usize,
    /// Bytes held.
    len: usize,
}

impl Ring {
    /// An empty ring with no storage.
    pub(super) fn new() -> Ring {
        Ring::default()
    }

    /// Bytes waiting to be written.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits to be written.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when a read could not store a single byte.
    pub(super) fn is_full(&self, pool: &BufPool) -> bool {
        self.len == pool.buffer_size()
    }

    /// True while the ring holds pool storage (what the tests check an empty ring against).
    #[cfg(test)]
    fn has_storage(&self) -> bool {
        self.buf.is_some()
    }

    /// One read from `src` into the free space: `readv` when that space wraps, a plain read otherwise.
    /// `Ok(0)` means EOF (the ring is never full when called).
    pub(super) fn read_from<R: Read>(
        &mut self,
        src: &mut R,
        pool: &mut BufPool,
    ) -> io::Result<usize> {
        debug_assert!(!self.is_full(pool), "read into a full ring");
        let buf = self.buf.get_or_insert_with(|| pool.take());
        let cap = buf.len();
        let tail = (self.head + self.len) % cap;
        // Free space runs from `tail` to the end of the buffer (and on from 0 to `head`), or it is the
        // gap between the held bytes' end and their start.
        let to_end = tail >= self.head && !(self.len > 0 && tail == self.head);
        // A plain read wherever the free space is one slice: the kernel serves it without copying in and
        // checking an iovec array (`recvfrom` rather than a one-iovec `readv`).
        let result = if !to_end {
            // The single gap [tail, head) in front of the held bytes.
            src.read(&mut buf[tail..self.head])
        } else if self.head == 0 {
            // [tail, cap): the common case, an empty ring (which restarts at 0).
            src.read(&mut buf[tail..])
        } else {
            // [tail, cap) then [0, head).
            let (front, back) = buf.split_at_mut(tail);
            src.read_vectored(&mut [
                IoSliceMut::new(back),
                IoSliceMut::new(&mut front[..self.head]),
            ])
        };
        if let Ok(n) = result {
            self.len += n;
        }
        self.release_if_empty(pool);
        result
    }

    /// One `writev` of the held bytes to `dst`; storage goes back to the pool once the ring is empty.
    pub(super) fn write_to<W: Write>(
        &mut self,
        dst: &mut W,
        pool: &mut BufPool,
    ) -> io::Result<usize> {
        let Some(buf) = self.buf.as_deref() else {
            return Ok(0);
        };
        let cap = buf.len();
        let first_end = (self.head + self.len).min(cap);
        let first = &buf[self.head..first_end];
        let second = &buf[..self.len - first.len()];
        let written = if second.is_empty() {
            dst.write(first)?
        } else {
            dst.write_vectored(&[IoSlice::new(first), IoSlice::new(second)])?
        };
        self.consume(written, cap);
        self.release_if_empty(pool);
        Ok(written)
    }

    fn consume(&mut self, count: usize, cap: usize) {
        self.len -= count;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + count) % cap
        };
    }

    fn release_if_empty(&mut self, pool: &mut BufPool) {
        if self.len == 0 {
            self.head = 0;
            if let Some(buf) = self.buf.take() {
                pool.give(buf);
            }
        }
    }

    /// Drops the held bytes and returns the storage (the pair is being torn down).
    pub(super) fn clear(&mut self, pool: &mut BufPool) {
        self.len = 0;
        self.release_if_empty(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A writer that accepts at most `limit` bytes per call, to force partial writes.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let n = data.len().min(self.limit);
            self.out.extend_from_slice(&data[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut total = 0;
            for buf in bufs {
                let n = buf.len().min(self.limit - total);
                self.out.extend_from_slice(&buf[..n]);
                total += n;
                if total == self.limit {
                    break;
                }
            }
            Ok(total)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_empty_ring_owns_no_storage() {
        let mut pool = BufPool::new(8);
        let mut ring = Ring::new();
        assert!(!ring.has_storage());
        assert_eq!(
            ring.read_from(&mut Cursor::new(vec![]), &mut pool).unwrap(),
            0
        );
        assert!(
            !ring.has_storage(),
            "an EOF read must give the storage back"
        );
        assert_eq!(pool.spare(), 1);
    }

    #[test]
    fn test_fill_until_full_then_drain() {
        let mut pool = BufPool::new(8);
        let mut ring = Ring::new();
        let mut src = Cursor::new((0u8..20).collect::<Vec<_>>());
        assert_eq!(ring.read_from(&mut src, &mut pool).unwrap(), 8);
        assert!(ring.is_full(&pool));
        let mut out = Trickle {
            out: vec![],
            limit: 100,
        };
        assert_eq!(ring.write_to(&mut out, &mut pool).unwrap(), 8);
        assert!(ring.is_empty() && !ring.has_storage());
        assert_eq!(out.out, (0u8..8).collect::<Vec<_>>());
    }

    #[test]
    fn test_wraparound_uses_both_halves_and_keeps_order() {
        let mut pool = BufPool::new(8);
        let mut ring = Ring::new();
        let data: Vec<u8> = (0u8..=255).collect();
        let mut src = Cursor::new(data.clone());
        let mut out = Trickle {
            out: vec![],
            limit: 3,
        };
        // Partial writes of 3 with reads in between push head around the ring many times.
        loop {
            let read = if ring.is_full(&pool) {
                0
            } else {
                ring.read_from(&mut src, &mut pool).unwrap()
            };
            let written = ring.write_to(&mut out, &mut pool).unwrap();
            if read == 0 && written == 0 {
                break;
            }
        }
        assert_eq!(out.out, data);
    }

    #[test]
    fn test_vectored_read_fills_tail_and_head_in_one_call() {
        let mut pool = BufPool::new(8);
        let mut ring = Ring::new();
        ring.read_from(&mut Cursor::new(vec![1, 2, 3, 4, 5, 6]), &mut pool)
            .unwrap();
        let mut out = Trickle {
            out: vec![],
            limit: 4,
        };
        ring.write_to(&mut out, &mut pool).unwrap();
        // head = 4, len = 2: free space is [6, 8) and [0, 4) = 6 bytes, in two slices.
        let n = ring
            .read_from(&mut Cursor::new(vec![7, 8, 9, 10, 11, 12, 13]), &mut pool)
            .unwrap();
        assert_eq!(n, 6);
        assert!(ring.is_full(&pool));
        out.limit = 100;
        ring.write_to(&mut out, &mut pool).unwrap();
        assert_eq!(out.out, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn test_single_gap_read_when_tail_behind_head() {
        let mut pool = BufPool::new(8);
        let mut ring = Ring::new();
        ring.read_from(&mut Cursor::new(vec![0; 8]), &mut pool)
            .unwrap();
        let mut out = Trickle {
            out: vec![],
            limit: 5,
        };
        ring.write_to(&mut out, &mut pool).unwrap(); // head 5, len 3, tail 0
        let n = ring
            .read_from(&mut Cursor::new(vec![9; 10]), &mut pool)
            .unwrap();
        assert_eq!(n, 5, "only the gap [0, 5) is free");
        assert!(ring.is_full(&pool));
    }

    #[test]
    fn test_pool_is_bounded() {
        let mut pool = BufPool::new(1 << 20);
        let mut rings: Vec<Ring> = (0..10).map(|_| Ring::new()).collect();
        for ring in &mut rings {
            ring.read_from(&mut Cursor::new(vec![1]), &mut pool)
                .unwrap();
        }
        for ring in &mut rings {
            ring.clear(&mut pool);
        }
        assert_eq!(
            pool.spare(),
            2,
            "2 MiB of 1 MiB buffers are kept, the rest freed"
        );
    }
}
