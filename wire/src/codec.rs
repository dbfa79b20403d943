//! Splitting a byte stream into protocol frames, with limits.
//!
//! Every regular message is `tag: u8, len: i32 (including itself), body`.
//! The proxy forwards frames unchanged, so all it needs from a frame is its
//! tag and its extent; bodies are only decoded where Ferry acts on them.

use thiserror::Error;

/// Largest startup packet accepted (PostgreSQL itself uses 10,000 bytes).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Why a frame could not be accepted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below its own size: the stream is not PostgreSQL.
    #[error("invalid message length {0}")]
    BadLength(i32),
    /// The length exceeds the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A client sent a message type the protocol does not define.
    #[error("unknown frontend message type 0x{0:02x}")]
    UnknownTag(u8),
}

/// Message types a client may send after startup.
pub fn is_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'B' | b'C'
            | b'd'
            | b'c'
            | b'f'
            | b'D'
            | b'E'
            | b'H'
            | b'F'
            | b'P'
            | b'p'
            | b'Q'
            | b'S'
            | b'X'
    )
}

/// Checks a message header's length field against the limit; returns the
/// body length (after the length word itself).
fn check_length(header: [u8; 4], max_len: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(header);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    let len = len as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    Ok(len - 4)
}

/// Looks at the start of `buf` for one complete frame.
///
/// Returns `Ok(Some((tag, total_len)))` where `total_len` includes the tag
/// byte, `Ok(None)` when more bytes are needed, or an error as soon as the
/// header alone shows the frame is unacceptable (so an oversized message is
/// refused before it is buffered).
pub fn peek_frame(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let body = check_length([buf[1], buf[2], buf[3], buf[4]], max_len)?;
    let total = 5 + body;
    Ok((buf.len() >= total).then_some((buf[0], total)))
}

/// Looks for a complete untagged startup packet (`len: i32, body`).
pub fn peek_startup(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(FrameError::BadLength(len));
    }
    let len = len as usize;
    if len > MAX_STARTUP_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_STARTUP_LEN,
        });
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Reads a NUL-terminated string from the front of `buf`, returning it and
/// the rest.
pub fn read_cstr(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&buf[..end]).ok()?;
    Some((s, &buf[end + 1..]))
}

/// Walks a client's message stream as it arrives, checking each header
/// (tag and length) without holding whole messages: a large COPY or Bind
/// streams through, and a hostile length is refused as soon as its header
/// is seen.
#[derive(Debug, Default)]
pub struct FrameScanner {
    /// Bytes of the current message body still to pass.
    remaining: usize,
    /// Accept any message type (the server's side of the conversation).
    backend: bool,
}

/// One step of [`FrameScanner::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// This many bytes at the front may be forwarded as they are.
    Pass(usize),
    /// A whole message the caller asked to see is at the front: `tag`, and
    /// `len` bytes including tag and length word.
    Frame { tag: u8, len: usize },
    /// Nothing can be decided before more bytes arrive.
    More,
}

impl FrameScanner {
    /// A scanner for server messages, which accepts every message type.
    pub fn backend() -> Self {
        Self {
            remaining: 0,
            backend: true,
        }
    }

    /// Like [`advance`](Self::advance), but stops at each message for which
    /// `whole(tag)` holds until all of it is in `buf`, and hands it to the
    /// caller; other messages stream through. Call it again on the bytes
    /// after what it returned.
    pub fn step(
        &mut self,
        buf: &[u8],
        max_len: usize,
        whole: impl Fn(u8) -> bool,
    ) -> Result<Step, FrameError> {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let take = self.remaining.min(buf.len());
            self.remaining -= take;
            return Ok(Step::Pass(take));
        }
        if buf.is_empty() {
            return Ok(Step::More);
        }
        if !self.backend && !is_frontend_tag(buf[0]) {
            return Err(FrameError::UnknownTag(buf[0]));
        }
        if buf.len() < 5 {
            return Ok(Step::More);
        }
        let body = check_length([buf[1], buf[2], buf[3], buf[4]], max_len)?;
        if whole(buf[0]) {
            return Ok(if buf.len() >= 5 + body {
                Step::Frame {
                    tag: buf[0],
                    len: 5 + body,
                }
            } else {
                Step::More
            });
        }
        let take = body.min(buf.len() - 5);
        self.remaining = body - take;
        Ok(Step::Pass(5 + take))
    }

    /// Returns how many bytes at the front of `buf` may be forwarded now,
    /// calling `on_tag` for each message that starts in them. Bytes after
    /// that are an incomplete header and must be kept for the next call.
    pub fn advance(
        &mut self,
        buf: &[u8],
        max_len: usize,
        mut on_tag: impl FnMut(u8),
    ) -> Result<usize, FrameError> {
        let mut at = 0;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - at);
                at += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(at);
                }
            }
            let rest = &buf[at..];
            if rest.is_empty() {
                return Ok(at);
            }
            if !self.backend && !is_frontend_tag(rest[0]) {
                return Err(FrameError::UnknownTag(rest[0]));
            }
            if rest.len() < 5 {
                return Ok(at);
            }
            self.remaining = check_length([rest[1], rest[2], rest[3], rest[4]], max_len)?;
            on_tag(rest[0]);
            at += 5;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_and_partial_frames() {
        let msg = [b'Q', 0, 0, 0, 9, b's', b'e', b'l', b'!', 0];
        assert_eq!(peek_frame(&msg, 100), Ok(Some((b'Q', 10))));
        assert_eq!(peek_frame(&msg[..7], 100), Ok(None));
        assert_eq!(peek_frame(&msg[..3], 100), Ok(None));
    }

    #[test]
    fn hostile_lengths_are_refused_from_the_header() {
        let max = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(
            peek_frame(&max, 1 << 20),
            Err(FrameError::TooLarge {
                len: i32::MAX as usize,
                max: 1 << 20
            })
        );
        assert_eq!(
            peek_frame(&[b'Q', 0, 0, 0, 3], 100),
            Err(FrameError::BadLength(3))
        );
        assert_eq!(
            peek_frame(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100),
            Err(FrameError::BadLength(-1))
        );
    }

    #[test]
    fn startup_limits() {
        assert_eq!(peek_startup(&[0, 0, 0, 8, 4, 0xd2]), Ok(None));
        assert_eq!(peek_startup(&[0, 0, 0, 2]), Err(FrameError::BadLength(2)));
        assert!(matches!(
            peek_startup(&[0, 1, 0, 0]),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn scanner_streams_bodies_and_waits_for_headers() {
        let mut sc = FrameScanner::default();
        let mut tags = Vec::new();
        // A Query of 10 bytes, split across three reads, then a Sync.
        let msg = [
            b'Q', 0, 0, 0, 9, b'a', b'b', b'c', b'd', 0, b'S', 0, 0, 0, 4,
        ];
        assert_eq!(sc.advance(&msg[..3], 100, |t| tags.push(t)), Ok(0));
        assert_eq!(sc.advance(&msg[..7], 100, |t| tags.push(t)), Ok(7));
        assert_eq!(sc.advance(&msg[7..], 100, |t| tags.push(t)), Ok(8));
        assert_eq!(tags, vec![b'Q', b'S']);
    }

    #[test]
    fn scanner_refuses_bad_headers() {
        let mut sc = FrameScanner::default();
        assert_eq!(
            sc.advance(&[b'Q', 0x7f, 0xff, 0xff, 0xff], 1000, |_| {}),
            Err(FrameError::TooLarge {
                len: i32::MAX as usize,
                max: 1000
            })
        );
        let mut sc = FrameScanner::default();
        assert_eq!(
            sc.advance(&[0x00, 1, 2], 1000, |_| {}),
            Err(FrameError::UnknownTag(0))
        );
    }

    #[test]
    fn step_hands_over_whole_frames_and_streams_the_rest() {
        let mut sc = FrameScanner::default();
        // A DataRow-like 'd' of 6 body bytes, then a Query, split.
        let msg = [
            b'd', 0, 0, 0, 10, 1, 2, 3, 4, 5, 6, b'Q', 0, 0, 0, 6, b'x', 0,
        ];
        let want_q = |t: u8| t == b'Q';
        assert_eq!(sc.step(&msg[..7], 100, want_q), Ok(Step::Pass(7)));
        assert_eq!(sc.step(&msg[7..9], 100, want_q), Ok(Step::Pass(2)));
        assert_eq!(sc.step(&msg[9..14], 100, want_q), Ok(Step::Pass(2)));
        assert_eq!(sc.step(&msg[11..15], 100, want_q), Ok(Step::More));
        assert_eq!(
            sc.step(&msg[11..], 100, want_q),
            Ok(Step::Frame { tag: b'Q', len: 7 })
        );
        assert_eq!(
            sc.step(&[0x00, 0, 0, 0, 4], 100, want_q),
            Err(FrameError::UnknownTag(0))
        );
        let mut be = FrameScanner::backend();
        assert_eq!(
            be.step(&[b'Z', 0, 0, 0, 5, b'I'], 100, |t| t == b'Z'),
            Ok(Step::Frame { tag: b'Z', len: 6 })
        );
        assert_eq!(
            be.step(&[b'Z', 0x7f, 0, 0, 0], 100, |_| false),
            Err(FrameError::TooLarge {
                len: 0x7f00_0000,
                max: 100
            })
        );
    }

    #[test]
    fn cstr() {
        assert_eq!(read_cstr(b"ab\0cd"), Some(("ab", &b"cd"[..])));
        assert_eq!(read_cstr(b"ab"), None);
    }
}
