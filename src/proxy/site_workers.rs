//! The threads that serve every notebook port: a connection accepted on a notebook's port
//! is dealt to one of them, which runs the notebook site's actix service on it with the
//! notebook it came in for as connection data.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{HttpService, Protocol, Request, Response};
use actix_service::boxed::BoxServiceFactory;
use actix_service::{Service, ServiceFactory};
use actix_web::dev::Extensions;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

/// The actix service a notebook's port serves. The web layer composes it
/// (`web::notebook_site`): `notebook_site::notebook_site` with Notebox's static files and
/// the same middleware as Notebox's own listener.
pub type SiteService = BoxServiceFactory<(), Request, Response<BoxBody>, actix_web::Error, ()>;

/// Builds the `SiteService` on each site worker (an actix `App` stays on its thread).
pub type SiteApp = Arc<dyn Fn() -> SiteService + Send + Sync>;

/// The notebook a listener serves (one per notebook port); every connection accepted on
/// the port carries it (the request's connection data).
pub struct SiteOf {
    pub id: String,
    /// The port was another notebook's before: what that notebook's pages left in the
    /// browser for this origin (storage, caches) is cleared when the member enters.
    pub inherited: bool,
    /// Ends (its sender is dropped) when the port closes: every connection accepted on it
    /// ends with it, WebSockets included.
    pub closed: watch::Receiver<()>,
}

/// A connection accepted on a notebook's port, on its way to a site worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    site: Arc<SiteOf>,
}

/// The threads that serve every notebook's port: one per core, at most two (a big download
/// does not stall the rest), each running the notebook site's actix service for every
/// notebook. A running notebook thus costs a listening socket and a task, not a server
/// with threads of its own (docs/PERFORMANCE.md, "Memory").
#[derive(Clone)]
pub struct SiteWorkers {
    queues: Arc<Vec<mpsc::UnboundedSender<Accepted>>>,
    next: Arc<AtomicUsize>,
}

impl SiteWorkers {
    pub fn start(app: &SiteApp) -> Result<SiteWorkers, std::io::Error> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        let mut queues = Vec::with_capacity(count);
        for n in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            let app = app.clone();
            std::thread::Builder::new()
                .name(format!("notebook-sites-{n}"))
                .spawn(move || site_worker(&app, rx))?;
            queues.push(tx);
        }
        Ok(SiteWorkers {
            queues: Arc::new(queues),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Accepts connections on a notebook's port until the task is aborted, and deals them
    /// to the workers.
    pub async fn accept(self, listener: tokio::net::TcpListener, port: u16, site: Arc<SiteOf>) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    // Small answers and WebSocket frames go out at once (as actix does).
                    let _ = stream.set_nodelay(true);
                    match stream.into_std() {
                        Ok(stream) => self.deal(Accepted {
                            stream,
                            peer,
                            site: site.clone(),
                        }),
                        Err(e) => tracing::debug!(error = %e, "cannot hand over a connection"),
                    }
                }
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(port, error = %e, "cannot accept on a notebook port");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Hands a connection to the next worker in turn.
    fn deal(&self, accepted: Accepted) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        if self.queues[n].send(accepted).is_err() {
            tracing::error!("a notebook site worker has stopped; the connection is dropped");
        }
    }
}

/// One site worker: an actix runtime serving the connections dealt to it until Notebox
/// ends (or the port a connection came from closes).
fn site_worker(app: &SiteApp, mut queue: mpsc::UnboundedReceiver<Accepted>) {
    let rt = match actix_web::rt::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a notebook site worker");
            return;
        }
    };
    rt.block_on(async move {
        // As Notebox's own listener: idle keep-alive 5 s, the request head within 5 s.
        let factory = HttpService::build()
            .keep_alive(Duration::from_secs(5))
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            .on_connect_ext(|io: &SiteStream, data: &mut Extensions| {
                data.insert(io.site.clone());
            })
            .finish(app());
        let service = match factory.new_service(()).await {
            Ok(s) => std::rc::Rc::new(s),
            Err(e) => {
                tracing::error!(error = ?e, "cannot build the notebook site service");
                return;
            }
        };
        while let Some(accepted) = queue.recv().await {
            let stream = match tokio::net::TcpStream::from_std(accepted.stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot take over a connection");
                    continue;
                }
            };
            let mut closed = accepted.site.closed.clone();
            let io = SiteStream {
                io: stream,
                site: accepted.site,
            };
            let connection = service.call((io, Protocol::Http1, Some(accepted.peer)));
            actix_web::rt::spawn(async move {
                tokio::select! {
                    _ = connection => {}
                    // The port closed: the connection (and a WebSocket relayed on it) ends.
                    _ = closed.changed() => {}
                }
            });
        }
    });
}

/// A connection on a notebook's port, with the notebook it is for.
struct SiteStream {
    io: tokio::net::TcpStream,
    site: Arc<SiteOf>,
}

impl AsyncRead for SiteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SiteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
