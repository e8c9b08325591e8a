//! The end of a container's log, kept within a byte budget while it streams in.

/// The end of a container's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    pub text: String,
    /// Older lines were left out to stay within the byte budget.
    pub truncated: bool,
}

/// Keeps the last `max` bytes of what goes through it, in at most twice that much memory;
/// when it had to leave something out, the answer starts at a whole line.
pub(super) struct TailBuffer {
    bytes: Vec<u8>,
    max: usize,
    dropped: bool,
}

impl TailBuffer {
    pub(super) fn new(max: usize) -> TailBuffer {
        TailBuffer {
            bytes: Vec::new(),
            max,
            dropped: false,
        }
    }

    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.max {
            self.keep_last();
        }
    }

    fn keep_last(&mut self) {
        let cut = self.bytes.len().saturating_sub(self.max);
        if cut > 0 {
            self.bytes.drain(..cut);
            self.dropped = true;
        }
    }

    pub(super) fn finish(mut self) -> LogTail {
        self.keep_last();
        if self.dropped {
            // The cut fell inside a line (or a character): start after it.
            if let Some(newline) = self.bytes.iter().position(|b| *b == b'\n') {
                self.bytes.drain(..=newline);
            }
        }
        LogTail {
            text: String::from_utf8_lossy(&self.bytes).into_owned(),
            truncated: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LogTail, TailBuffer};

    fn tail_of(chunks: &[&str], max: usize) -> LogTail {
        let mut buffer = TailBuffer::new(max);
        for c in chunks {
            buffer.push(c.as_bytes());
            assert!(buffer.bytes.len() <= 2 * max + c.len());
        }
        buffer.finish()
    }

    #[test]
    fn log_tails_keep_the_last_whole_lines_within_the_budget() {
        let whole = tail_of(&["a\n", "b\n"], 10);
        assert_eq!(whole.text, "a\nb\n");
        assert!(!whole.truncated);
        let exact = tail_of(&["0123456\n", "89\n"], 11);
        assert_eq!(
            (exact.text.as_str(), exact.truncated),
            ("0123456\n89\n", false)
        );
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let cut = tail_of(&refs, 35);
        assert!(cut.truncated);
        assert_eq!(cut.text, "line 0997\nline 0998\nline 0999\n");
        // One line longer than the budget: its end, lossily decoded.
        let long = tail_of(&["ééééé"], 5);
        assert!(long.truncated);
        assert!(long.text.ends_with("éé"), "{:?}", long.text);
        assert!(long.text.len() <= 5 + 2, "{:?}", long.text);
    }
}
