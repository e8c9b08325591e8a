//! Following the frames of a relayed WebSocket (RFC 6455 §5.2) as its bytes go by, without
//! holding them, and telling a member's actions from the browser's messages on the way.

use crate::idle::MemberAction;

use super::actions::{member_action_ws, SocketKind};

/// Which side wrote the frames a `FrameScanner` follows: browsers mask theirs, servers must
/// not (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramesFrom {
    Browser,
    Jupyter,
}

/// Follows where the frames of a relayed WebSocket begin and end (RFC 6455 §5.2) without
/// keeping their payload: the bytes go on as they came, a long frame in many pieces. It
/// checks what passing them on relies on (masking, no extension, whole control frames) and
/// shows the messages of the browser to an `ActionWatch`.
pub struct FrameScanner {
    from: FramesFrom,
    /// The current frame's header while it is incomplete (2 to 14 bytes).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current frame's masking key, if masked, and how far into its payload we are.
    mask: Option<[u8; 4]>,
    position: usize,
    /// The current frame carries message data (not ping, pong or close); `fin`: it ends
    /// its message.
    data: bool,
    fin: bool,
    /// A close frame went by: the side that sent it is done.
    saw_close: bool,
    watch: Option<ActionWatch>,
}

impl FrameScanner {
    pub fn new(from: FramesFrom, kind: SocketKind) -> FrameScanner {
        FrameScanner {
            from,
            header: Vec::with_capacity(14),
            remaining: 0,
            mask: None,
            position: 0,
            data: false,
            fin: false,
            saw_close: false,
            watch: (from == FramesFrom::Browser && kind != SocketKind::Other).then(|| {
                ActionWatch {
                    kind,
                    seen: Vec::new(),
                    found: false,
                }
            }),
        }
    }

    /// Whether a close frame went by.
    pub fn saw_close(&self) -> bool {
        self.saw_close
    }

    /// Between two frames.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }

    /// Follows the next piece of the stream; returns a member action that a message
    /// completed in it showed, or why the stream cannot be passed on.
    pub fn scan(&mut self, mut piece: &[u8]) -> Result<Option<MemberAction>, &'static str> {
        let mut action = None;
        while !piece.is_empty() {
            if self.remaining == 0 {
                let wanted = header_len(&self.header) - self.header.len();
                let (taken, rest) = piece.split_at(wanted.min(piece.len()));
                self.header.extend_from_slice(taken);
                piece = rest;
                if self.header.len() < header_len(&self.header) {
                    continue;
                }
                self.start_frame()?;
                if self.remaining == 0 {
                    action = action.or(self.end_frame());
                }
                continue;
            }
            let take = usize::try_from(self.remaining).map_or(piece.len(), |r| r.min(piece.len()));
            let (payload, rest) = piece.split_at(take);
            if let Some(watch) = self.watch.as_mut().filter(|w| self.data && w.wants_more()) {
                let plain: Vec<u8> = match self.mask {
                    Some(key) => payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ key[(self.position + i) % 4])
                        .collect(),
                    None => payload.to_vec(),
                };
                action = action.or(watch.feed(&plain));
            }
            self.position += take;
            self.remaining -= take as u64;
            piece = rest;
            if self.remaining == 0 {
                action = action.or(self.end_frame());
            }
        }
        Ok(action)
    }

    /// The header is complete: what frame is this?
    fn start_frame(&mut self) -> Result<(), &'static str> {
        let h = std::mem::take(&mut self.header);
        self.header = Vec::with_capacity(14);
        let (fin, reserved, opcode) = (h[0] & 0x80 != 0, h[0] & 0x70, h[0] & 0x0f);
        let masked = h[1] & 0x80 != 0;
        if reserved != 0 {
            return Err("reserved bits set, but no extension was agreed");
        }
        match (self.from, masked) {
            (FramesFrom::Browser, false) => return Err("frames from a client must be masked"),
            (FramesFrom::Jupyter, true) => return Err("frames from the server must not be masked"),
            _ => {}
        }
        let (length, key_at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            n => (u64::from(n), 2),
        };
        if length >> 63 != 0 {
            return Err("frame length out of range");
        }
        match opcode {
            0..=2 => {}
            8..=10 if fin && length <= 125 => self.saw_close |= opcode == 8,
            8..=10 => return Err("control frames must be whole and at most 125 bytes"),
            _ => return Err("unknown opcode"),
        }
        self.mask = masked.then(|| [h[key_at], h[key_at + 1], h[key_at + 2], h[key_at + 3]]);
        self.remaining = length;
        self.position = 0;
        self.data = opcode <= 2;
        self.fin = fin;
        // Text or binary starts a message; a continuation goes on with the current one.
        if let Some(watch) = self.watch.as_mut().filter(|_| opcode == 1 || opcode == 2) {
            watch.start();
        }
        Ok(())
    }

    /// The current frame is through: if it ended a message, what did the message say?
    fn end_frame(&mut self) -> Option<MemberAction> {
        if !(self.data && self.fin) {
            return None;
        }
        self.watch.as_mut().and_then(ActionWatch::finish)
    }
}

/// The length of a frame header (RFC 6455 §5.2), from what of it there is: 2 bytes until
/// those tell the rest.
fn header_len(header: &[u8]) -> usize {
    let [_, second, ..] = header else { return 2 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let key = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + key
}

/// Whether a message from the browser is a member's action (`member_action_ws`), told
/// without holding the message: a kernel message is searched piece by piece (with the end
/// of the piece before, so a name split between two pieces is found), a terminal message is
/// judged by its start.
struct ActionWatch {
    kind: SocketKind,
    seen: Vec<u8>,
    found: bool,
}

/// Longer than any name `member_action_ws` looks for.
const ACTION_CARRY: usize = 32;
/// As much of a terminal message as `member_action_ws` needs.
const ACTION_HEAD: usize = 64;

impl ActionWatch {
    fn start(&mut self) {
        self.seen.clear();
        self.found = false;
    }

    fn wants_more(&self) -> bool {
        match self.kind {
            SocketKind::KernelChannels => !self.found,
            SocketKind::Terminal => self.seen.len() < ACTION_HEAD,
            SocketKind::Other => false,
        }
    }

    fn feed(&mut self, plain: &[u8]) -> Option<MemberAction> {
        match self.kind {
            SocketKind::KernelChannels => {
                self.seen.extend_from_slice(plain);
                let action = member_action_ws(self.kind, &self.seen);
                self.found = action.is_some();
                let old = self.seen.len().saturating_sub(ACTION_CARRY);
                self.seen.drain(..old);
                action
            }
            SocketKind::Terminal => {
                let room = ACTION_HEAD.saturating_sub(self.seen.len());
                self.seen.extend_from_slice(&plain[..room.min(plain.len())]);
                None
            }
            SocketKind::Other => None,
        }
    }

    fn finish(&mut self) -> Option<MemberAction> {
        let action = match self.kind {
            SocketKind::Terminal => member_action_ws(self.kind, &self.seen),
            _ => None,
        };
        self.start();
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A browser's frame: masked with `key`.
    fn masked_frame(opcode: u8, fin: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    #[test]
    fn frames_are_followed_in_any_pieces_and_actions_found_across_them() {
        let execute = br#"{"header":{"msg_type":"execute_request"},"content":{"code":"1"}}"#;
        let mut padded = vec![b' '; 70_000];
        padded.extend_from_slice(execute);
        let mut stream = masked_frame(9, true, b"ping", [1, 2, 3, 4]);
        // A long message in two fragments, a pong between them.
        stream.extend(masked_frame(1, false, &padded[..69_990], [9, 8, 7, 6]));
        stream.extend(masked_frame(10, true, b"", [0, 0, 0, 0]));
        stream.extend(masked_frame(0, true, &padded[69_990..], [5, 5, 5, 5]));
        for piece_size in [1, 3, 14, 1000, 16 * 1024, stream.len()] {
            let mut frames = FrameScanner::new(FramesFrom::Browser, SocketKind::KernelChannels);
            let mut actions = Vec::new();
            for piece in stream.chunks(piece_size) {
                actions.extend(frames.scan(piece).expect("valid frames"));
            }
            assert_eq!(
                actions,
                vec![MemberAction::Execute],
                "pieces of {piece_size}"
            );
            assert!(frames.at_boundary());
        }
        let mut terminal = FrameScanner::new(FramesFrom::Browser, SocketKind::Terminal);
        let typed = masked_frame(1, true, br#"["stdin","ls\r"]"#, [7, 7, 7, 7]);
        assert_eq!(terminal.scan(&typed), Ok(Some(MemberAction::TerminalInput)));
        let resized = masked_frame(1, true, br#"["set_size",24,80]"#, [7, 7, 7, 7]);
        assert_eq!(terminal.scan(&resized), Ok(None));
    }

    #[test]
    fn frames_the_relay_cannot_pass_on_are_refused() {
        let refused = |from: FramesFrom, bytes: &[u8]| {
            FrameScanner::new(from, SocketKind::Other)
                .scan(bytes)
                .is_err()
        };
        // Unmasked from a browser, masked from Jupyter.
        assert!(refused(FramesFrom::Browser, &[0x82, 0x01, 0xff]));
        assert!(refused(
            FramesFrom::Jupyter,
            &masked_frame(2, true, b"x", [1, 1, 1, 1])
        ));
        // An extension's bits, an unknown opcode, a fragmented or long control frame.
        assert!(refused(FramesFrom::Jupyter, &[0xc2, 0x00]));
        assert!(refused(FramesFrom::Jupyter, &[0x83, 0x00]));
        assert!(refused(FramesFrom::Jupyter, &[0x09, 0x00]));
        assert!(refused(FramesFrom::Jupyter, &[0x89, 126, 0x00, 0x7e]));
        // A 200 MiB frame is only a header to follow.
        let mut big = FrameScanner::new(FramesFrom::Jupyter, SocketKind::Other);
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(200u64 << 20).to_be_bytes());
        assert_eq!(big.scan(&header), Ok(None));
        assert!(!big.at_boundary());
        assert_eq!(big.scan(&vec![0; 1 << 20]), Ok(None));
        assert_eq!(big.remaining, 199 << 20);
    }
}
