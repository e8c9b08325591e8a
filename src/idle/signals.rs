//! The signals a notebook's activity is read from: what its member did, its GPUs at a
//! sample, its kernels' states.

use crate::jupyter::ExecutionState;

/// Something a member did in their notebook (seen by the proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAction {
    /// Sent code to a kernel (or answered its `input()`).
    Execute,
    /// Typed in a terminal.
    TerminalInput,
    /// Saved, created, renamed or deleted a file.
    FileChange,
    /// Opened a notebook or file, started a kernel or a terminal.
    Open,
    /// Pressed "Keep running" (or called the keepalive API).
    KeepAlive,
}

impl MemberAction {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberAction::Execute => "execute",
            MemberAction::TerminalInput => "terminal_input",
            MemberAction::FileChange => "file_change",
            MemberAction::Open => "open",
            MemberAction::KeepAlive => "keep_alive",
        }
    }

    /// "ran code", for "ran code 2 min ago".
    pub fn describe(self) -> &'static str {
        match self {
            MemberAction::Execute => "ran code",
            MemberAction::TerminalInput => "typed in a terminal",
            MemberAction::FileChange => "saved a file",
            MemberAction::Open => "opened a file or kernel",
            MemberAction::KeepAlive => "pressed Keep running",
        }
    }
}

/// One GPU the notebook holds, at one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    pub index: u32,
    pub utilization_percent: Option<u32>,
    pub memory_used_mib: u64,
}

/// A kernel's state and since when (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelState {
    pub id: String,
    pub name: String,
    pub state: ExecutionState,
    pub since: i64,
}

impl KernelState {
    pub fn is_busy(&self) -> bool {
        self.state.is_busy()
    }
}
