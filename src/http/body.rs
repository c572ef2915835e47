//! One request body, read in the buffer the head arrived in ([`BodyDecoder`]): a
//! `Content-Length` body is complete once enough bytes are there; a chunked one is de-chunked in
//! place as it arrives, its framing squeezed out, so the handler sees the plain body right after
//! the head. The connection and the test harness both use it.

use super::chunked::{ChunkedDecoder, ChunkedError, ChunkedLimits};
use super::error::HttpError;
use super::head::BodyKind;

/// Room for chunked framing on top of the body limit in the read buffer.
const CHUNK_SLACK_BYTES: usize = 8 * 1024;
/// Chunk-size line limit (size and extensions).
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Trailer section limit.
const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// A buffer a body is decoded in: its bytes, and a way to cut a range out of them.
pub(crate) trait BodyBuffer {
    /// Every byte held, the head before the body included.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Removes `from..to` (indices into [`BodyBuffer::bytes_mut`]), moving the rest down.
    fn squeeze(&mut self, from: usize, to: usize);
}

impl BodyBuffer for Vec<u8> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }

    fn squeeze(&mut self, from: usize, to: usize) {
        self.drain(from..to);
    }
}

/// How far a body has come.
#[derive(Debug)]
pub(crate) enum BodyDecoder {
    /// `Content-Length`: this many bytes.
    Length(usize),
    /// Chunked: the decoded bytes so far sit right after the head.
    Chunked {
        /// Where in the framing it is.
        decoder: ChunkedDecoder,
        /// Decoded bytes so far.
        decoded: usize,
    },
}

impl BodyDecoder {
    /// The decoder for a head's framing (no body is an empty one); 413 when the declared length
    /// is over `max_body_bytes`.
    pub(crate) fn for_head(kind: BodyKind, max_body_bytes: u64) -> Result<BodyDecoder, HttpError> {
        match kind {
            BodyKind::None => Ok(BodyDecoder::Length(0)),
            BodyKind::Length(n) if n > max_body_bytes => Err(HttpError::BodyTooLarge),
            // n <= max_body_bytes, which fits in memory, hence in usize.
            BodyKind::Length(n) => Ok(BodyDecoder::Length(usize::try_from(n).unwrap_or(usize::MAX))),
            BodyKind::Chunked => Ok(BodyDecoder::Chunked {
                decoder: ChunkedDecoder::new(ChunkedLimits {
                    max_body_bytes,
                    max_line_bytes: MAX_CHUNK_LINE_BYTES,
                    max_trailer_bytes: MAX_TRAILER_BYTES,
                }),
                decoded: 0,
            }),
        }
    }

    /// Takes in what arrived of the body that starts at `start` in `buf`: the body's length
    /// once it is complete (its bytes at `start..start + len`), `None` while it is not.
    pub(crate) fn advance(&mut self, buf: &mut impl BodyBuffer, start: usize) -> Result<Option<usize>, HttpError> {
        match self {
            BodyDecoder::Length(n) => Ok((buf.bytes_mut().len() - start >= *n).then_some(*n)),
            BodyDecoder::Chunked { decoder, decoded } => {
                let (mut out, mut inp) = (*decoded, *decoded);
                let result = decoder.decode(&mut buf.bytes_mut()[start..], &mut out, &mut inp);
                *decoded = out;
                if inp > out {
                    buf.squeeze(start + out, start + inp);
                }
                match result {
                    Ok(true) => Ok(Some(out)),
                    Ok(false) => Ok(None),
                    Err(ChunkedError::TooLarge) => Err(HttpError::BodyTooLarge),
                    Err(ChunkedError::Malformed(what)) => Err(HttpError::BadRequest(what)),
                }
            }
        }
    }

    /// The most input to hold while this body, starting at `start`, arrives.
    pub(crate) fn read_cap(&self, start: usize, max_body_bytes: u64) -> usize {
        match self {
            BodyDecoder::Length(n) => start.saturating_add(*n),
            BodyDecoder::Chunked { .. } => {
                let max_body = usize::try_from(max_body_bytes).unwrap_or(usize::MAX);
                start.saturating_add(max_body).saturating_add(CHUNK_SLACK_BYTES)
            }
        }
    }
}
