//! Which requests and WebSocket messages are a member's own actions (saving a file, running
//! code, typing in a terminal), as opposed to what an open JupyterLab tab does by itself:
//! the idle policy starts a notebook's idle clock again on an action only.

use actix_web::http::Method;

use crate::idle::MemberAction;

/// What a proxied HTTP request says about its member: saving or changing a file, opening
/// a document, starting a kernel or terminal. The polling an open JupyterLab tab does by
/// itself (kernel, session, terminal and directory listings, status, workspace saves) is
/// not an action. `path` is the part after `/nb/{id}/`.
pub fn member_action_http(method: &Method, path: &str, query: &str) -> Option<MemberAction> {
    let api = path.strip_prefix("api/")?;
    let (collection, rest) = api.split_once('/').unwrap_or((api, ""));
    match (method.as_str(), collection) {
        ("PUT" | "POST" | "PATCH" | "DELETE", "contents") => Some(MemberAction::FileChange),
        // Opening a notebook or file (a listing of a directory has no `type=`).
        ("GET", "contents")
            if query
                .split('&')
                .any(|p| p == "type=notebook" || p == "type=file")
                && !query.split('&').any(|p| p == "content=0") =>
        {
            Some(MemberAction::Open)
        }
        ("POST" | "PATCH", "sessions" | "terminals") => Some(MemberAction::Open),
        ("POST", "kernels") if rest.ends_with("/interrupt") || rest.ends_with("/restart") => {
            Some(MemberAction::Execute)
        }
        ("POST", "kernels") => Some(MemberAction::Open),
        _ => None,
    }
}

/// Which kind of relayed WebSocket a path is, for classifying what the member sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// `api/kernels/{id}/channels`: Jupyter messages.
    KernelChannels,
    /// `terminals/websocket/{name}`: terminado messages.
    Terminal,
    Other,
}

pub fn socket_kind(path: &str) -> SocketKind {
    if path.starts_with("api/kernels/") && path.ends_with("/channels") {
        SocketKind::KernelChannels
    } else if path.starts_with("terminals/websocket/") {
        SocketKind::Terminal
    } else {
        SocketKind::Other
    }
}

/// What a message from the member's browser says: code sent to a kernel (an execute
/// request, or an answer to `input()`), keys typed in a terminal. Kernel-info and
/// completion requests, heartbeats and terminal resizes are not actions. Works on both
/// kernel wire protocols (JSON text and the v1 binary framing, whose header is JSON too)
/// without parsing the message.
pub fn member_action_ws(kind: SocketKind, frame: &[u8]) -> Option<MemberAction> {
    match kind {
        SocketKind::KernelChannels => {
            let finder = |needle: &str| memchr::memmem::find(frame, needle.as_bytes()).is_some();
            (finder("\"execute_request\"") || finder("\"input_reply\""))
                .then_some(MemberAction::Execute)
        }
        SocketKind::Terminal => {
            let trimmed = frame.trim_ascii_start();
            (trimmed.starts_with(b"[\"stdin\"") || trimmed.starts_with(b"[ \"stdin\""))
                .then_some(MemberAction::TerminalInput)
        }
        SocketKind::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_actions_are_told_from_a_tab_polling() {
        let http = |m: Method, p: &str, q: &str| member_action_http(&m, p, q);
        assert_eq!(
            http(Method::PUT, "api/contents/a.ipynb", ""),
            Some(MemberAction::FileChange)
        );
        assert_eq!(
            http(
                Method::GET,
                "api/contents/a.ipynb",
                "type=notebook&content=1"
            ),
            Some(MemberAction::Open)
        );
        assert_eq!(
            http(Method::POST, "api/kernels/k/interrupt", ""),
            Some(MemberAction::Execute)
        );
        assert_eq!(
            http(Method::POST, "api/sessions", ""),
            Some(MemberAction::Open)
        );
        // What an open, untouched JupyterLab asks every few seconds.
        for (m, p, q) in [
            (Method::GET, "api/kernels", ""),
            (Method::GET, "api/sessions", ""),
            (Method::GET, "api/terminals", ""),
            (Method::GET, "api/contents/", "content=1&hash=0"),
            (
                Method::GET,
                "api/contents/a.ipynb",
                "type=notebook&content=0",
            ),
            (Method::GET, "api/me", ""),
            (Method::GET, "api/status", ""),
            (Method::PUT, "lab/api/workspaces/default", ""),
            (Method::GET, "lab", ""),
        ] {
            assert_eq!(http(m.clone(), p, q), None, "{m} {p}?{q}");
        }
        let k = SocketKind::KernelChannels;
        assert_eq!(socket_kind("api/kernels/abc/channels"), k);
        assert_eq!(socket_kind("terminals/websocket/1"), SocketKind::Terminal);
        assert_eq!(
            member_action_ws(
                k,
                br#"{"header":{"msg_type":"execute_request"},"content":{"code":"1"}}"#
            ),
            Some(MemberAction::Execute)
        );
        assert_eq!(
            member_action_ws(k, br#"{"header": {"msg_type": "kernel_info_request"}}"#),
            None
        );
        assert_eq!(
            member_action_ws(SocketKind::Terminal, br#"["stdin","ls\r"]"#),
            Some(MemberAction::TerminalInput)
        );
        assert_eq!(
            member_action_ws(SocketKind::Terminal, br#"["set_size",24,80]"#),
            None
        );
        assert_eq!(
            member_action_ws(SocketKind::Other, b"execute_request"),
            None
        );
    }
}
