//! The WebSocket relay: Jupyter is connected first, then the browser accepted with the
//! subprotocol Jupyter chose, then the bytes relayed both ways as they arrive — frames
//! followed (`frames`) but never held whole — until either side closes or the credential
//! the socket was opened with stops being valid.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::WebError;
use crate::idle::MemberAction;

use super::actions::SocketKind;
use super::caller::Credential;
use super::frames::{FrameScanner, FramesFrom};
use super::replies::error_response;
use super::state::ProxyState;
use super::upstream::UpstreamClient;

/// How long Jupyter may take to accept a WebSocket.
const WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How much the relay reads from Jupyter at once: frames pass in pieces of at most this
/// size whatever their length, so a WebSocket never holds a frame whole.
const WS_RELAY_CHUNK: usize = 16 * 1024;
/// Pieces queued for the browser, at most.
const WS_RELAY_QUEUE: usize = 4;

/// Connects to Jupyter first, then accepts the browser with the subprotocol Jupyter chose,
/// then relays the WebSocket both ways until either side closes. `Err` when Jupyter cannot
/// be reached.
pub async fn proxy_websocket(
    req: &HttpRequest,
    payload: web::Payload,
    upstream: &UpstreamClient,
    url: &str,
    headers: HeaderMap,
    relay_to: Relay,
) -> Result<HttpResponse, String> {
    // A client's broken handshake is its own error, told before Jupyter is asked.
    if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
        return Ok(error_response(
            req,
            WebError::new(
                StatusCode::BAD_REQUEST,
                "bad_websocket_handshake",
                format!("This is not a valid WebSocket handshake: {e}"),
            ),
        ));
    }
    let offered = offered_protocols(req);
    let jupyters = match connect_upstream(upstream, url, headers, &offered).await? {
        Ok(socket) => socket,
        Err(status) => return Ok(refused_by_jupyter(status)),
    };
    accept_browser(req, payload, jupyters, &offered, relay_to)
}

/// Jupyter answered, but refused (an unknown kernel: 404): its answer passed on.
fn refused_by_jupyter(status: StatusCode) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(format!(
            r#"{{"error": {{"code": "upstream_refused", "message": "Jupyter refused the WebSocket ({status})."}}}}"#
        ))
}

/// The subprotocols the browser offers.
fn offered_protocols(req: &HttpRequest) -> Vec<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Jupyter's side of an accepted WebSocket.
struct UpstreamSocket {
    /// The subprotocol Jupyter chose.
    protocol: Option<String>,
    /// The raw connection, and whatever Jupyter sent right after its answer.
    io: awc::BoxedSocket,
    early: Bytes,
}

/// Connects to Jupyter's side of the WebSocket; `Ok(Err(status))` when Jupyter refused it.
async fn connect_upstream(
    upstream: &UpstreamClient,
    url: &str,
    headers: HeaderMap,
    offered: &[String],
) -> Result<Result<UpstreamSocket, StatusCode>, String> {
    let mut ws = upstream.client().ws(url);
    for (name, value) in headers.iter() {
        if name == header::HOST {
            continue;
        }
        ws = ws.header(name.clone(), value.clone());
    }
    if !offered.is_empty() {
        ws = ws.protocols(offered.iter().map(String::as_str));
    }
    match tokio::time::timeout(WS_HANDSHAKE_TIMEOUT, ws.connect()).await {
        Ok(Ok((response, framed))) => {
            let protocol = response
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let parts = framed.into_parts();
            Ok(Ok(UpstreamSocket {
                protocol,
                io: parts.io,
                early: parts.read_buf.freeze(),
            }))
        }
        Ok(Err(awc::error::WsClientError::InvalidResponseStatus(status))) => Ok(Err(status)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("Jupyter did not complete the WebSocket handshake in time".into()),
    }
}

/// Accepts the browser's WebSocket (with the subprotocol Jupyter chose, if the browser
/// offered it) and starts relaying.
fn accept_browser(
    req: &HttpRequest,
    payload: web::Payload,
    jupyters: UpstreamSocket,
    offered: &[String],
    relay_to: Relay,
) -> Result<HttpResponse, String> {
    let mut response = actix_http::ws::handshake(req.head()).map_err(|e| e.to_string())?;
    let chosen = jupyters
        .protocol
        .as_deref()
        .filter(|p| offered.iter().any(|o| o == p));
    if let Some(protocol) = chosen {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    // What goes to the browser: a few pieces queued at most, so a browser that reads
    // slowly makes the relay stop reading Jupyter.
    let (to_client, queued) = tokio::sync::mpsc::channel::<Bytes>(WS_RELAY_QUEUE);
    let body = futures_util::stream::unfold(queued, |mut queued| async move {
        let piece = queued.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(piece), queued))
    });
    let response = response
        .message_body(actix_web::body::BodyStream::new(body).boxed())
        .map_err(|e| e.to_string())?;
    // Subscribed before the relay starts: a revocation from here on is seen.
    let changes = relay_to.state.credentials().changes();
    actix_web::rt::spawn(async move {
        let from_client = payload.into_inner();
        let UpstreamSocket { io, early, .. } = jupyters;
        relay(from_client, to_client, io, early, relay_to, changes).await;
    });
    Ok(response.into())
}

/// One relayed WebSocket: whose credential keeps it open.
pub struct Relay {
    pub state: web::Data<ProxyState>,
    pub notebook_id: String,
    pub user_id: i64,
    pub credential: Credential,
    pub kind: SocketKind,
}

impl Relay {
    /// Whether the credential the WebSocket was opened with still belongs to its user.
    async fn still_allowed(&self) -> bool {
        match self
            .state
            .credentials()
            .lookup_cached(&self.credential)
            .await
        {
            Ok(Some(user)) => user.id == self.user_id,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = ?e.message, "cannot re-check a WebSocket's credential; closing it");
                false
            }
        }
    }

    /// Returns once the credential stops being valid (logout, password change, disable,
    /// revoke).
    async fn revoked(&self, changes: &mut tokio::sync::watch::Receiver<u64>) {
        loop {
            if changes.changed().await.is_err() || !self.still_allowed().await {
                return;
            }
        }
    }
}

/// Why a relayed WebSocket ended.
enum RelayEnd {
    ClientGone,
    UpstreamGone,
    /// Either side sent something that is not a WebSocket frame the relay can pass on.
    Violation(&'static str),
    Revoked,
}

/// Relays the bytes of a WebSocket both ways as they arrive, frame boundaries followed but
/// frames never assembled: memory per socket is a few pieces, whatever the frame sizes.
async fn relay(
    from_client: actix_web::dev::Payload,
    to_client: tokio::sync::mpsc::Sender<Bytes>,
    upstream: awc::BoxedSocket,
    early: Bytes,
    relay_to: Relay,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let (state, id) = (&relay_to.state, relay_to.notebook_id.as_str());
    let metrics = state.metrics().clone();
    metrics.websocket_opened();
    let (from_up, mut to_up) = tokio::io::split(upstream);
    let mut client_frames = FrameScanner::new(FramesFrom::Browser, relay_to.kind);
    let mut upstream_frames = FrameScanner::new(FramesFrom::Jupyter, SocketKind::Other);
    // Whether the browser has been sent whole frames only (a close frame may follow).
    let mut client_at_boundary = true;
    let end = tokio::select! {
        end = relay_to_upstream(from_client, &mut to_up, &mut client_frames, |action| {
            state.member_acted(id, action)
        }) => end,
        end = relay_to_client(
            from_up, early, &to_client, &mut upstream_frames, &mut client_at_boundary,
        ) => end,
        () = relay_to.revoked(&mut changes) => RelayEnd::Revoked,
        () = to_client.closed() => RelayEnd::ClientGone,
    };
    let close = match end {
        RelayEnd::Revoked => {
            tracing::info!(notebook = %id, "credential revoked; closing its WebSocket");
            Some(close_frame(1008, "credential revoked"))
        }
        RelayEnd::Violation(why) => {
            tracing::info!(notebook = %id, why, "WebSocket protocol error; closing it");
            Some(close_frame(1002, why))
        }
        RelayEnd::UpstreamGone => Some(Bytes::from_static(&[0x88, 0])),
        RelayEnd::ClientGone => None,
    };
    // A close frame only between frames, and only if Jupyter's was not passed on already;
    // otherwise the connection just ends. Jupyter sees its connection closed either way.
    if let Some(frame) = close.filter(|_| client_at_boundary && !upstream_frames.saw_close()) {
        if to_client.send(frame).await.is_err() {
            tracing::debug!(notebook = %id, "the browser left before the WebSocket's close");
        }
    }
    metrics.websocket_closed();
}

/// Browser → Jupyter: every piece as it came (the browser's masking kept), once its frames
/// check out; member actions noted on the way.
async fn relay_to_upstream(
    mut from_client: actix_web::dev::Payload,
    to_up: &mut (impl tokio::io::AsyncWrite + Unpin),
    frames: &mut FrameScanner,
    mut acted: impl FnMut(MemberAction),
) -> RelayEnd {
    use tokio::io::AsyncWriteExt;
    while let Some(Ok(piece)) = from_client.next().await {
        match frames.scan(&piece) {
            Ok(Some(action)) => acted(action),
            Ok(None) => {}
            Err(why) => return RelayEnd::Violation(why),
        }
        if to_up.write_all(&piece).await.is_err() {
            return RelayEnd::UpstreamGone;
        }
    }
    RelayEnd::ClientGone
}

/// Jupyter → browser: read in pieces of `WS_RELAY_CHUNK`, passed on as they are.
/// `at_boundary` says whether what the browser was sent so far ends with a whole frame.
async fn relay_to_client(
    mut from_up: impl tokio::io::AsyncRead + Unpin,
    early: Bytes,
    to_client: &tokio::sync::mpsc::Sender<Bytes>,
    frames: &mut FrameScanner,
    at_boundary: &mut bool,
) -> RelayEnd {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0; WS_RELAY_CHUNK];
    let mut piece = early;
    loop {
        if piece.is_empty() {
            match from_up.read(&mut buf).await {
                Ok(0) | Err(_) => return RelayEnd::UpstreamGone,
                Ok(n) => piece = Bytes::copy_from_slice(&buf[..n]),
            }
        }
        if let Err(why) = frames.scan(&piece) {
            return RelayEnd::Violation(why);
        }
        *at_boundary = false;
        if to_client.send(std::mem::take(&mut piece)).await.is_err() {
            return RelayEnd::ClientGone;
        }
        *at_boundary = frames.at_boundary();
    }
}

/// A close frame from Notebox to the browser (a server's: unmasked).
fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = vec![0x88, 2 + reason.len() as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    Bytes::from(frame)
}
