//! The authenticated Jupyter proxy at `/nb/{id}/…`: HTTP (streamed both ways) and
//! WebSocket (relayed as bytes arrive, frames followed but never held whole). Only the
//! notebook's owner gets through; notebox's cookies and the caller's credentials never
//! reach Jupyter, which gets the notebook's own token instead.
//!
//! Everything the proxy needs is in its own `ProxyState`; it knows nothing of Notebox's
//! pages, which depend on it, not the reverse — so it can be mounted on a listener (and
//! origin) of its own.
//!
//! A request, top to bottom:
//! - `serve`: the entry points and the steps of one request;
//! - `state`: `ProxyState`, where a notebook runs, and the proxy's calls into the runtime;
//! - `caller`: who is calling (the credential resolver the pages' extractors share);
//! - `origin`: where notebooks are served and which origins may call them;
//! - `request`: what a request is (page, WebSocket) and its path inside the notebook;
//! - `actions`: which requests and messages are the member's own actions;
//! - `replies`: what the proxy answers itself (errors, the not-running page, redirects);
//! - `upstream`: the client to Jupyter, and the headers and cookies that pass;
//! - `http` and `websocket` (with `frames`): the two relays.
//!
//! A notebook's own origin:
//! - `sites`: the per-notebook port listeners, opened and closed as notebooks run;
//! - `site_workers`: the threads that serve every notebook port;
//! - `notebook_site`: what a notebook's origin answers (the entry handshake, the notebook).

mod actions;
mod caller;
mod frames;
mod http;
mod notebook_site;
pub mod origin;
mod replies;
mod request;
mod serve;
mod site_workers;
mod sites;
mod state;
mod upstream;
mod websocket;

pub use caller::{header_token, session_cookie, Credential, Credentials};
pub use notebook_site::{is_notebook_host, notebook_site, ENTER_PATH};
pub use origin::Origins;
pub use serve::{add_slash, proxy};
pub use site_workers::{SiteApp, SiteService};
pub use sites::{SiteError, Sites};
pub use state::{ProxyHandles, ProxyState};
pub use upstream::UpstreamClient;
