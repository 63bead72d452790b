//! gzip on every core, with bytes that do not depend on how many there are.
//!
//! The stream pigz writes: the input is cut into fixed blocks, each
//! compressed as raw deflate on its own thread with the 32 KiB before it as
//! the dictionary (so matches across the cut are kept) and ended with a
//! sync flush, which byte-aligns it; the last block ends the stream. The
//! blocks joined are one deflate stream in one gzip member, which every
//! reader takes. What comes out depends only on the input, the level and
//! the block size: a layer's digest is the same on a machine with one core
//! or sixty-four. flate2 has no parallel writer; gzp has one, with its own
//! pool and channels, for what is here a hundred lines over flate2's
//! `Compress` whose bytes the tests pin.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

/// Part of the format: changing it changes every layer's digest.
const BLOCK: usize = 1 << 20;
/// deflate's window: the most a match can reach back.
const WINDOW: usize = 32 * 1024;

/// A gzip writer compressing blocks in parallel. [`ParGzWriter::finish`]
/// must be called: dropping it loses the end of the stream.
pub(crate) struct ParGzWriter<W: Write> {
    inner: W,
    level: Compression,
    block: Vec<u8>,
    /// The last [`WINDOW`] bytes of the block before `block`.
    dictionary: Vec<u8>,
    crc: Crc,
    running: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    threads: usize,
}

impl<W: Write> ParGzWriter<W> {
    /// The header has no name and no time, and a fixed OS byte, as the
    /// single-threaded writer's had: the same everywhere.
    pub(crate) fn new(mut inner: W, level: Compression) -> io::Result<Self> {
        let xfl = match level.level() {
            9.. => 2,
            0..=1 => 4,
            _ => 0,
        };
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        Ok(Self {
            inner,
            level,
            block: Vec::with_capacity(BLOCK),
            dictionary: Vec::new(),
            crc: Crc::new(),
            running: VecDeque::new(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    /// Starts compressing the full block, after writing out the oldest
    /// results when every thread is busy.
    fn start_block(&mut self, last: bool) -> io::Result<()> {
        while self.running.len() >= self.threads {
            self.write_oldest()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dictionary = std::mem::take(&mut self.dictionary);
        self.dictionary = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let level = self.level;
        self.running.push_back(
            std::thread::Builder::new()
                .name("gzip".into())
                .spawn(move || deflate(level, &dictionary, &data, last))?,
        );
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(h) = self.running.pop_front() {
            let out = h
                .join()
                .map_err(|_| io::Error::other("a gzip thread panicked"))??;
            self.inner.write_all(&out)?;
        }
        Ok(())
    }

    /// Ends the stream (the last block, CRC and length) and returns the
    /// inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.start_block(true)?;
        while !self.running.is_empty() {
            self.write_oldest()?;
        }
        let (crc, len) = (self.crc.sum(), self.crc.amount());
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&len.to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if self.block.len() == BLOCK {
            self.start_block(false)?;
        }
        Ok(n)
    }

    /// Blocks are cut by size only: a flush writes out nothing more, or
    /// the bytes would depend on where callers flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One block as raw deflate: ended by a sync flush, or the stream's end.
fn deflate(level: Compression, dictionary: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(level, false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        // zlib: a flush is complete once a call leaves output space unused.
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), Compression::new(6)).unwrap();
        w.threads = threads;
        for c in data.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
            w.flush().unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Text-like and random bytes, with repeats that reach across blocks.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) && v.len() > 5000 {
                let at = (x as usize / 7) % (v.len() - 4000);
                let copy: Vec<u8> = v[at..at + 3000].to_vec();
                v.extend_from_slice(&copy);
            } else {
                v.extend_from_slice(format!("line {} of {x:x}\n", v.len()).as_bytes());
            }
        }
        v.truncate(len);
        v
    }

    #[test]
    fn round_trips_at_every_size_around_the_block() {
        for len in [
            0,
            1,
            WINDOW,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            3 * BLOCK + 12345,
        ] {
            let data = sample(len);
            assert_eq!(gunzip(&gzip(&data, 3, 70_000)), data, "{len} bytes");
        }
    }

    #[test]
    fn the_bytes_depend_on_neither_threads_nor_write_sizes() {
        let data = sample(3 * BLOCK + 777);
        let one = gzip(&data, 1, data.len());
        for (threads, chunk) in [(2, 4096), (8, 1), (64, BLOCK + 3)] {
            assert!(gzip(&data, threads, chunk) == one, "{threads} threads");
        }
    }

    #[test]
    fn the_dictionary_keeps_matches_across_blocks() {
        // A random block, then a copy of its end: the copy costs almost
        // nothing only if its matches reach back into the block before.
        let mut x: u32 = 1;
        let block: Vec<u8> = (0..BLOCK)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let mut data = block.clone();
        data.extend_from_slice(&block[BLOCK - WINDOW / 2..]);
        let gz = gzip(&data, 2, data.len());
        assert!(gz.len() < BLOCK + 4096, "{} bytes", gz.len());
    }

    #[test]
    fn the_header_is_the_same_everywhere() {
        let gz = gzip(b"x", 1, 1);
        assert_eq!(gz[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }
}
