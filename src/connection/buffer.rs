//! Connection buffers. A connection holds a read or write buffer only while it has something in
//! it: between requests both go back to a small per-loop [`BufPool`], so an idle keep-alive
//! connection costs a few hundred bytes, not kilobytes.

use crate::http::body::BodyBuffer;

/// Size of a pooled buffer: enough for typical heads and small responses.
pub(crate) const POOL_BUF_BYTES: usize = 8 * 1024;
/// Buffers kept for reuse, each kind.
const POOL_KEEP: usize = 256;

/// Free read and write buffers of one loop.
#[derive(Debug, Default)]
pub(crate) struct BufPool {
    read: Vec<Vec<u8>>,
    write: Vec<Vec<u8>>,
}

impl BufPool {
    fn take_read(&mut self) -> Vec<u8> {
        self.read.pop().unwrap_or_else(|| vec![0; POOL_BUF_BYTES])
    }

    fn take_write(&mut self) -> Vec<u8> {
        self.write.pop().unwrap_or_else(|| Vec::with_capacity(POOL_BUF_BYTES))
    }

    fn give_read(&mut self, buf: Vec<u8>) {
        // A buffer that grew for a large request is dropped rather than kept.
        if buf.len() == POOL_BUF_BYTES && self.read.len() < POOL_KEEP {
            self.read.push(buf);
        }
    }

    fn give_write(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= 4 * POOL_BUF_BYTES && self.write.len() < POOL_KEEP {
            buf.clear();
            self.write.push(buf);
        }
    }
}

/// Bytes read from the client and not yet consumed: `buf[start..end]`.
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// The unconsumed bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The unconsumed bytes, mutable (for in-place de-chunking).
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Number of unconsumed bytes.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when nothing is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks the first `n` unconsumed bytes as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every unconsumed byte.
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Removes the unconsumed bytes in `from..to` (relative to the unconsumed data), moving the
    /// rest down: used to squeeze out chunked framing after de-chunking in place.
    pub(crate) fn remove(&mut self, from: usize, to: usize) {
        let (from, to) = (self.start + from, self.start + to);
        debug_assert!(from <= to && to <= self.end);
        self.buf.copy_within(to..self.end, from);
        self.end -= to - from;
    }

    /// Free space to read into, making room first: takes a buffer from the pool, compacts, or
    /// grows (doubling) while the unconsumed data stays under `cap` bytes. Empty when the buffer
    /// already holds `cap` bytes.
    pub(crate) fn spare(&mut self, cap: usize, pool: &mut BufPool) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = pool.take_read();
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < cap {
                let grown = (self.buf.len() * 2).min(cap);
                self.buf.resize(grown, 0);
            }
        } else if self.start > self.buf.len() / 2 {
            // Most of the buffer is consumed: compact so the next request starts near 0.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let limit = self.start.saturating_add(cap).min(self.buf.len()).max(self.end);
        &mut self.buf[self.end..limit]
    }

    /// Records that `n` bytes were read into [`ReadBuf::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Gives the buffer back to the pool if nothing is buffered.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        if self.is_empty() && !self.buf.is_empty() {
            pool.give_read(std::mem::take(&mut self.buf));
        }
    }
}

/// A body is decoded in the read buffer, right after its head.
impl BodyBuffer for ReadBuf {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }

    fn squeeze(&mut self, from: usize, to: usize) {
        self.remove(from, to);
    }
}

/// Encoded responses not yet written: `buf[pos..]`.
#[derive(Debug, Default)]
pub(crate) struct WriteBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl WriteBuf {
    /// Bytes still to write.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// True when everything was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The buffer to append encoded responses to (taken from the pool when needed).
    pub(crate) fn out(&mut self, pool: &mut BufPool) -> &mut Vec<u8> {
        if self.buf.capacity() == 0 {
            self.buf = pool.take_write();
        }
        &mut self.buf
    }

    /// Records that `n` bytes of [`WriteBuf::pending`] were written.
    pub(crate) fn written(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Drops what was not written (the connection is closing), keeping the allocation for the
    /// pool.
    pub(crate) fn discard(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Gives the buffer back to the pool if everything was written.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        if self.is_empty() && self.buf.capacity() > 0 {
            pool.give_write(std::mem::take(&mut self.buf));
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(rb: &mut ReadBuf, pool: &mut BufPool, cap: usize, bytes: &[u8]) -> usize {
        let spare = rb.spare(cap, pool);
        let n = spare.len().min(bytes.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        rb.filled(n);
        n
    }

    #[test]
    fn read_buf_grows_to_cap_and_no_further() {
        let mut pool = BufPool::default();
        let mut rb = ReadBuf::default();
        let big = vec![b'x'; 40_000];
        let mut total = 0;
        while total < big.len() {
            let n = fill(&mut rb, &mut pool, 20_000, &big[total..]);
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 20_000);
        assert_eq!(rb.len(), 20_000);
        assert!(rb.spare(20_000, &mut pool).is_empty());
        rb.consume(15_000);
        assert_eq!(rb.spare(20_000, &mut pool).len(), 15_000);
        assert_eq!(rb.data().len(), 5_000);
    }

    #[test]
    fn read_buf_goes_back_to_pool_when_empty() {
        let mut pool = BufPool::default();
        let mut rb = ReadBuf::default();
        fill(&mut rb, &mut pool, 16_384, b"GET / HTTP/1.1\r\n\r\n");
        rb.release(&mut pool);
        assert!(pool.read.is_empty(), "kept while data is buffered");
        rb.consume(rb.len());
        rb.release(&mut pool);
        assert_eq!(pool.read.len(), 1);
        assert_eq!(rb.buf.capacity(), 0);
    }

    #[test]
    fn remove_squeezes_out_a_range() {
        let mut pool = BufPool::default();
        let mut rb = ReadBuf::default();
        fill(&mut rb, &mut pool, 100, b"abcdefgh");
        rb.consume(1);
        rb.remove(2, 5);
        assert_eq!(rb.data(), b"bcgh");
    }

    #[test]
    fn write_buf_cursor_and_release() {
        let mut pool = BufPool::default();
        let mut wb = WriteBuf::default();
        wb.out(&mut pool).extend_from_slice(b"hello");
        wb.written(2);
        assert_eq!(wb.pending(), b"llo");
        wb.release(&mut pool);
        assert!(pool.write.is_empty());
        wb.written(3);
        assert!(wb.is_empty());
        wb.release(&mut pool);
        assert_eq!(pool.write.len(), 1);
    }
}
