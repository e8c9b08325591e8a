//! `notebox job …`: a client of a Notebox server's jobs API. It submits a job, follows
//! its log and turns the outcome into an exit status a script can test (the CLI section
//! of the jobs contract). It knows nothing of the server's internals: it speaks HTTP
//! (hyper over rustls with the system's roots, no OpenSSL) with a personal access token,
//! every request bounded in time and every answer in size.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

/// One request, answer included, gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers larger than this are refused (a log answer is at most 256 KiB).
const MAX_BODY: usize = 4 << 20;
/// How often a followed log is asked for new text.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// While following, an unreachable server is retried this long before giving up.
const RETRY_FOR: Duration = Duration::from_secs(60);
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// A log answer this long suggests more text is waiting: ask again without pausing.
const FULL_LOG_ANSWER: usize = 128 << 10;
/// The log does not say when a job ends; while it is quiet the job itself is read this
/// often, so a job that ends without finishing its log (never started) is noticed.
const STATE_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Exit status for a usage error, a refusal by the server or an answer not understood.
const EXIT_ERROR: u8 = 2;
/// Exit status when the server could not be reached.
const EXIT_UNREACHABLE: u8 = 3;

/// The jobs commands.
#[derive(clap::Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job (a notebook's code cells in order, or a command) and follow its log
    ///
    /// The log goes to stdout as it comes; the exit status is the job's outcome: 0 when
    /// it succeeded, its exit code when it failed, 124 when it ran out of time, 130 when
    /// it was cancelled (2 when the server refused, 3 when it could not be reached).
    /// Ctrl-C stops following, not the job: `notebox job cancel` stops it.
    Run(Box<RunArgs>),
    /// Show a job's state, progress and outcome (exit status as for `run` once it ended)
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the job as the API's JSON
        #[arg(long)]
        json: bool,
        /// The job's id
        job_id: String,
    },
    /// Print a job's log
    Logs {
        #[command(flatten)]
        server: ServerArgs,
        /// Keep printing as the job writes, until it ends (exit status as for `run`)
        #[arg(long)]
        follow: bool,
        /// The job's id
        job_id: String,
    },
    /// Cancel a queued or running job
    Cancel {
        #[command(flatten)]
        server: ServerArgs,
        /// The job's id
        job_id: String,
    },
}

/// Which server, and the token that says who is asking.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// The Notebox server's base URL (http:// or https://)
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// A file holding a personal access token (default: $NOTEBOX_TOKEN)
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
}

/// `notebox job run`'s arguments.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The notebook whose folder the job runs in
    #[arg(long, value_name = "ID")]
    pub notebook: String,
    /// The machine to run on (default: the notebook's)
    #[arg(long, value_name = "M")]
    pub machine: Option<String>,
    /// The catalog image to run in
    #[arg(long, value_name = "I")]
    pub image: Option<String>,
    /// The environment to run in
    #[arg(long, value_name = "E")]
    pub environment: Option<String>,
    /// A parameter, k=v (repeatable); v is JSON when it parses as JSON (0.1, 2, true,
    /// "x"), else a string
    #[arg(short = 'p', long = "param", value_name = "k=v", value_parser = parse_parameter)]
    pub params: Vec<Parameter>,
    /// Stop the job after this long (2h, 90m, 1h 30m)
    #[arg(long, value_name = "DURATION", value_parser = parse_time_limit)]
    pub time_limit: Option<String>,
    /// Print the job's id once it is submitted instead of following it
    #[arg(long)]
    pub no_follow: bool,
    /// Run the command given after `--` instead of a notebook
    #[arg(long, requires = "argv", conflicts_with = "path")]
    pub command: bool,
    /// The notebook to run, relative to the notebook's folder (ends in .ipynb)
    #[arg(value_name = "PATH", required_unless_present = "command", value_parser = parse_notebook_path)]
    pub path: Option<String>,
    /// With --command: the command and its arguments
    #[arg(last = true, value_name = "COMMAND", requires = "command")]
    pub argv: Vec<String>,
}

/// One `-p k=v`.
#[derive(Debug, Clone)]
pub struct Parameter {
    name: String,
    value: serde_json::Value,
}

fn parse_parameter(text: &str) -> Result<Parameter, String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err("expected k=v (no '=' in it)".into());
    };
    if name.is_empty() {
        return Err("expected k=v (the name before '=' is empty)".into());
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok(Parameter {
        name: name.to_owned(),
        value,
    })
}

fn parse_notebook_path(text: &str) -> Result<String, String> {
    if text.ends_with(".ipynb") {
        Ok(text.to_owned())
    } else {
        Err(
            "a notebook's path ends in .ipynb (to run a command: --command -- python train.py)"
                .into(),
        )
    }
}

/// Checked here so a typo fails before submitting; sent as written (the server parses it).
fn parse_time_limit(text: &str) -> Result<String, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (for example 2h, 90m, 1h 30m)"))?;
    Ok(text.to_owned())
}

#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{message} (HTTP {})", status.as_u16())]
    Refused { status: StatusCode, message: String },
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("unexpected answer from the server: {0}")]
    Answer(String),
    #[error("cannot write to stdout: {0}")]
    Output(std::io::Error),
}

impl ClientError {
    fn exit_status(&self) -> u8 {
        match self {
            ClientError::Unreachable(_) => EXIT_UNREACHABLE,
            _ => EXIT_ERROR,
        }
    }

    /// Worth retrying while following: the server may be restarting.
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            ClientError::Refused { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

// ---- The API's wire objects (the contract's "HTTP API"), only the fields used here.

use crate::model::JobState;

#[derive(Debug, Deserialize)]
struct Job {
    id: String,
    state: JobState,
    #[serde(default)]
    state_detail: Option<String>,
    #[serde(default)]
    notebook_name: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    queue_position: Option<u64>,
    #[serde(default)]
    progress: Option<Progress>,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default)]
    failed_cell: Option<u64>,
    #[serde(default)]
    error: Option<CellError>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    duration_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Progress {
    cell: u64,
    cells: u64,
}

#[derive(Debug, Deserialize)]
struct CellError {
    ename: String,
    evalue: String,
}

#[derive(Debug, Deserialize)]
struct LogChunk {
    text: String,
    offset: u64,
    finished: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

/// POST /api/v1/jobs.
#[derive(Serialize)]
struct NewJob<'a> {
    notebook: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    machine: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Parameters<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_limit: Option<&'a str>,
}

/// The `-p` values as a JSON object in the order given (serde_json's Map would sort them).
struct Parameters<'a>(&'a [Parameter]);

impl Serialize for Parameters<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for parameter in self.0 {
            map.serialize_entry(&parameter.name, &parameter.value)?;
        }
        map.end()
    }
}

impl Job {
    /// The exit status `run` ends with once the job has ended.
    fn exit_status(&self) -> Option<u8> {
        match self.state {
            JobState::Succeeded => Some(0),
            JobState::Failed => Some(
                self.exit_code
                    .and_then(|code| u8::try_from(code).ok())
                    .filter(|code| *code != 0)
                    .unwrap_or(1),
            ),
            JobState::TimedOut => Some(124),
            JobState::Cancelled => Some(130),
            JobState::Queued | JobState::Starting | JobState::Running => None,
        }
    }

    /// "Job {id} {state}: {detail} (after 2m 5s)".
    fn summary(&self) -> String {
        let mut line = format!("Job {} {}", self.id, self.state.as_str());
        if let Some(detail) = self.state_detail.as_deref().filter(|d| !d.is_empty()) {
            line.push_str(": ");
            line.push_str(detail);
        }
        if let Some(duration) = self.duration_seconds.and_then(whole_seconds) {
            line.push_str(&format!(
                " (after {})",
                humantime::format_duration(duration)
            ));
        }
        line
    }
}

fn whole_seconds(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds.round()).ok()
}

// ---- The HTTP client.

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// One server's API with the caller's token. The token is never printed (no Debug).
struct Api {
    client: Client<Https, Full<Bytes>>,
    /// The base URL without its trailing slash.
    base: String,
    authorization: HeaderValue,
}

impl Api {
    fn new(server: &ServerArgs) -> Result<Api, ClientError> {
        let base = base_url(&server.url)?;
        let authorization = read_token(server)?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Api {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base,
            authorization,
        })
    }

    async fn job(&self, id: &str) -> Result<Job, ClientError> {
        parse(&self.send(Method::GET, &job_path(id), None).await?)
    }

    async fn log_chunk(&self, id: &str, offset: u64) -> Result<LogChunk, ClientError> {
        let path = format!("{}/logs?offset={offset}", job_path(id));
        parse(&self.send(Method::GET, &path, None).await?)
    }

    /// Sends one request; the answer's body when its status is 2xx.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_now(method, path, body))
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!(
                    "no answer from {} within {REQUEST_TIMEOUT:?}",
                    self.base
                ))
            })?
    }

    async fn send_now(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let uri = format!("{}{path}", self.base);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(&uri)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Usage(format!("cannot make a request for {uri}: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ClientError::Unreachable(crate::http::error_chain(&e)))?;
        let status = response.status();
        let location = response.headers().get(LOCATION).cloned();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ClientError::Answer(format!("{uri} answered more than {} MiB", MAX_BODY >> 20))
                } else {
                    ClientError::Unreachable(format!(
                        "reading the answer from {uri}: {}",
                        crate::http::error_chain(&*e)
                    ))
                }
            })?
            .to_bytes();
        check_status(status, location.as_ref(), &body)?;
        Ok(body)
    }
}

/// A 2xx passes; a redirect or an error becomes a `Refused` with the API's message.
fn check_status(
    status: StatusCode,
    location: Option<&HeaderValue>,
    body: &[u8],
) -> Result<(), ClientError> {
    if status.is_success() {
        return Ok(());
    }
    let message = if status.is_redirection() {
        let to = location
            .and_then(|l| l.to_str().ok())
            .unwrap_or("elsewhere");
        format!("the server redirects to {to}; check --url (http or https, the path)")
    } else if let Ok(answer) = serde_json::from_slice::<ErrorBody>(body) {
        answer.error.message
    } else {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        if text.is_empty() {
            format!("the server answered {status}")
        } else {
            format!("the server answered {status}: {text}")
        }
    };
    Err(ClientError::Refused { status, message })
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Answer(e.to_string()))
}

/// `--url` checked and without its trailing slashes (API paths are appended to it).
fn base_url(url: &str) -> Result<String, ClientError> {
    let base = url.trim().trim_end_matches('/');
    let usage = |why: &str| ClientError::Usage(format!("--url {url}: {why}"));
    let uri: hyper::Uri = base.parse().map_err(|e| usage(&format!("{e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(usage(
            "give the server's address, http://host:port or https://host",
        ));
    }
    if uri.query().is_some() {
        return Err(usage("the address takes no query (?…)"));
    }
    Ok(base.to_owned())
}

/// The Authorization header, from --token-file (trimmed) or $NOTEBOX_TOKEN.
fn read_token(server: &ServerArgs) -> Result<HeaderValue, ClientError> {
    let (token, from) = match &server.token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ClientError::Usage(format!(
                    "cannot read the token file {}: {e}",
                    file.display()
                ))
            })?;
            (text, format!("in {}", file.display()))
        }
        None => match std::env::var("NOTEBOX_TOKEN") {
            Ok(text) => (text, "in $NOTEBOX_TOKEN".to_owned()),
            Err(std::env::VarError::NotPresent) => {
                return Err(ClientError::Usage(
                    "no token: pass --token-file F or set NOTEBOX_TOKEN (a personal access \
                     token, from `notebox token create USER` on the server)"
                        .into(),
                ))
            }
            Err(e) => return Err(ClientError::Usage(format!("NOTEBOX_TOKEN: {e}"))),
        },
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(ClientError::Usage(format!("the token {from} is empty")));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ClientError::Usage(format!(
            "the token {from} holds characters a token cannot have"
        ))
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// rustls with ring, trusting the system's roots.
fn tls_config() -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    // A system root rustls cannot parse is skipped, as every TLS client does.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Usage(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn job_path(id: &str) -> String {
    format!("/api/v1/jobs/{}", crate::http::encode_segment(id))
}

/// Runs `attempt` until it succeeds, retrying what may pass (an unreachable or restarting
/// server) for up to `RETRY_FOR`, and saying so once on stderr.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut failing_since: Option<Instant> = None;
    loop {
        match attempt().await {
            Ok(value) => {
                if failing_since.is_some() {
                    eprintln!("notebox: the server answers again");
                }
                return Ok(value);
            }
            Err(e) if e.is_transient() => {
                let since = match failing_since {
                    Some(since) => since,
                    None => {
                        eprintln!(
                            "notebox: {e}; retrying for up to {}",
                            humantime::format_duration(RETRY_FOR)
                        );
                        *failing_since.insert(Instant::now())
                    }
                };
                if since.elapsed() + RETRY_EVERY > RETRY_FOR {
                    eprintln!(
                        "notebox: still failing after {}; giving up",
                        humantime::format_duration(RETRY_FOR)
                    );
                    return Err(e);
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

// ---- Printing.

/// Writes log text to stdout as it comes, remembering whether a line was left open.
struct LogPrinter {
    line_open: bool,
}

impl LogPrinter {
    fn new() -> LogPrinter {
        LogPrinter { line_open: false }
    }

    fn print(&mut self, text: &str) -> Result<(), ClientError> {
        if text.is_empty() {
            return Ok(());
        }
        self.line_open = !text.ends_with('\n');
        print_out(text)
    }

    /// Ends an open last line on a terminal, so the summary on stderr starts its own.
    fn finish(&mut self) -> Result<(), ClientError> {
        if self.line_open && std::io::stdout().is_terminal() {
            self.line_open = false;
            return print_out("\n");
        }
        Ok(())
    }
}

/// Writes to stdout and flushes (no panic on a closed pipe, unlike `print!`).
fn print_out(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ClientError::Output)
}

/// What the follower last said about a job's state, so each change is said once.
struct Watch {
    state: JobState,
    queue_position: Option<u64>,
    checked: Instant,
}

impl Watch {
    fn new(job: &Job) -> Watch {
        Watch {
            state: job.state,
            queue_position: job.queue_position,
            checked: Instant::now(),
        }
    }

    /// Read the job now? Often while it waits for its turn, now and then once it runs.
    fn wants_check(&self) -> bool {
        matches!(self.state, JobState::Queued | JobState::Starting)
            || self.checked.elapsed() >= STATE_CHECK_EVERY
    }

    fn see(&mut self, job: &Job) {
        self.checked = Instant::now();
        let moved = job.state != self.state || job.queue_position != self.queue_position;
        self.state = job.state;
        self.queue_position = job.queue_position;
        if moved && !job.state.is_finished() {
            eprintln!("{}", waiting_line(job));
        }
    }
}

/// "Job {id} queued (position 2)", "Job {id} running".
fn waiting_line(job: &Job) -> String {
    match (job.state, job.queue_position) {
        (JobState::Queued, Some(position)) => {
            format!("Job {} queued (position {position})", job.id)
        }
        (state, _) => format!("Job {} {}", job.id, state.as_str()),
    }
}

fn print_status(job: &Job) -> Result<(), ClientError> {
    let mut text = format!("{}\n", job.summary());
    let mut field = |name: &str, value: &str| text.push_str(&format!("  {name:<10} {value}\n"));
    match (&job.path, &job.command) {
        (Some(path), _) => field("notebook:", &notebook_label(job, path)),
        (None, Some(command)) => field("command:", &command.join(" ")),
        (None, None) => {}
    }
    if let (JobState::Queued, Some(position)) = (job.state, job.queue_position) {
        field("queue:", &format!("position {position}"));
    }
    if let Some(progress) = &job.progress {
        field(
            "progress:",
            &format!("cell {} of {}", progress.cell, progress.cells),
        );
    }
    if let Some(started) = &job.started_at {
        field("started:", started);
    }
    if let Some(finished) = &job.finished_at {
        field("finished:", finished);
    }
    if let Some(code) = job.exit_code {
        field("exit code:", &code.to_string());
    }
    if let Some(error) = &job.error {
        let cell = job
            .failed_cell
            .map(|c| format!("cell {c}: "))
            .unwrap_or_default();
        field(
            "error:",
            &format!("{cell}{}: {}", error.ename, error.evalue),
        );
    }
    print_out(&text)
}

fn notebook_label(job: &Job, path: &str) -> String {
    match &job.notebook_name {
        Some(name) => format!("{path} in {name}"),
        None => path.to_owned(),
    }
}

// ---- The commands.

/// Runs one `notebox job` command; the process exit code.
pub fn run(command: JobCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("notebox: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run_command(command)) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("notebox: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}

async fn run_command(command: JobCommand) -> Result<u8, ClientError> {
    match command {
        JobCommand::Run(args) => submit_and_follow(&args).await,
        JobCommand::Status {
            server,
            json,
            job_id,
        } => show_status(&Api::new(&server)?, &job_id, json).await,
        JobCommand::Logs {
            server,
            follow,
            job_id,
        } => {
            let api = Api::new(&server)?;
            if follow {
                let job = api.job(&job_id).await?;
                follow_to_end(&api, &job).await
            } else {
                print_whole_log(&api, &job_id).await.map(|()| 0)
            }
        }
        JobCommand::Cancel { server, job_id } => {
            let api = Api::new(&server)?;
            let path = format!("{}/cancel", job_path(&job_id));
            let job: Job = parse(&api.send(Method::POST, &path, None).await?)?;
            print_out(&format!("{}\n", job.summary()))?;
            Ok(0)
        }
    }
}

async fn submit_and_follow(args: &RunArgs) -> Result<u8, ClientError> {
    let body = new_job_body(args)?;
    let api = Api::new(&args.server)?;
    let job: Job = parse(&api.send(Method::POST, "/api/v1/jobs", Some(body)).await?)?;
    eprintln!("Job {} submitted ({})", job.id, job.state.as_str());
    if args.no_follow {
        print_out(&format!("{}\n", job.id))?;
        return Ok(0);
    }
    if let (JobState::Queued, Some(_)) = (job.state, job.queue_position) {
        eprintln!("{}", waiting_line(&job));
    }
    follow_to_end(&api, &job).await
}

/// The POST /api/v1/jobs body for `run`'s arguments.
fn new_job_body(args: &RunArgs) -> Result<Vec<u8>, ClientError> {
    for (i, parameter) in args.params.iter().enumerate() {
        if args.params[..i].iter().any(|p| p.name == parameter.name) {
            return Err(ClientError::Usage(format!(
                "parameter {} is given twice",
                parameter.name
            )));
        }
    }
    let new_job = NewJob {
        notebook: &args.notebook,
        path: if args.command {
            None
        } else {
            args.path.as_deref()
        },
        command: args.command.then_some(args.argv.as_slice()),
        image: args.image.as_deref(),
        environment: args.environment.as_deref(),
        machine: args.machine.as_deref(),
        parameters: (!args.params.is_empty()).then_some(Parameters(&args.params)),
        time_limit: args.time_limit.as_deref(),
    };
    serde_json::to_vec(&new_job)
        .map_err(|e| ClientError::Usage(format!("cannot encode the job: {e}")))
}

/// Follows the log until it is finished, then says how the job ended; its exit status.
async fn follow_to_end(api: &Api, job: &Job) -> Result<u8, ClientError> {
    let mut watch = Watch::new(job);
    let mut printer = LogPrinter::new();
    let mut offset = 0;
    loop {
        let chunk = retrying(|| api.log_chunk(&job.id, offset)).await?;
        printer.print(&chunk.text)?;
        offset = chunk.offset;
        if chunk.finished || (watch.state.is_finished() && chunk.text.is_empty()) {
            break;
        }
        let more_waiting = chunk.text.len() >= FULL_LOG_ANSWER;
        if !more_waiting && watch.wants_check() {
            watch.see(&retrying(|| api.job(&job.id)).await?);
        }
        // Once the job has ended, its log's last text is read at once.
        if !more_waiting && !watch.state.is_finished() {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    printer.finish()?;
    let ended = wait_for_end(api, &job.id).await?;
    eprintln!("{}", ended.summary());
    // A job still going when its log has ended (it should not be) ends as an error.
    Ok(ended.exit_status().unwrap_or(EXIT_ERROR))
}

/// The job once it has ended: its log may finish a moment before its state is recorded.
async fn wait_for_end(api: &Api, id: &str) -> Result<Job, ClientError> {
    let deadline = Instant::now() + STATE_CHECK_EVERY;
    loop {
        let job = retrying(|| api.job(id)).await?;
        if job.state.is_finished() || Instant::now() >= deadline {
            return Ok(job);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn print_whole_log(api: &Api, id: &str) -> Result<(), ClientError> {
    let mut printer = LogPrinter::new();
    let mut offset = 0;
    loop {
        let chunk = api.log_chunk(id, offset).await?;
        printer.print(&chunk.text)?;
        if chunk.finished || chunk.text.is_empty() || chunk.offset <= offset {
            break;
        }
        offset = chunk.offset;
    }
    printer.finish()
}

async fn show_status(api: &Api, id: &str, json: bool) -> Result<u8, ClientError> {
    let body = api.send(Method::GET, &job_path(id), None).await?;
    let job: Job = parse(&body)?;
    if json {
        let text = String::from_utf8_lossy(&body);
        print_out(&format!("{}\n", text.trim_end()))?;
    } else {
        print_status(&job)?;
    }
    Ok(job.exit_status().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_keep_their_order_and_json_values() {
        let params: Vec<Parameter> = [
            "lr=0.1",
            "epochs=2",
            "name=x",
            "flag=true",
            "q=\"7\"",
            "eq=a=b",
        ]
        .iter()
        .map(|p| parse_parameter(p))
        .collect::<Result<_, _>>()
        .expect("valid parameters");
        let json = serde_json::to_string(&Parameters(&params)).expect("encodes");
        assert_eq!(
            json,
            r#"{"lr":0.1,"epochs":2,"name":"x","flag":true,"q":"7","eq":"a=b"}"#
        );
        assert!(parse_parameter("lr").is_err());
        assert!(parse_parameter("=1").is_err());
    }

    #[test]
    fn exit_status_follows_the_contract() {
        let job = |state: &str, code: Option<i64>| -> Job {
            serde_json::from_value(
                serde_json::json!({"id": "j", "state": state, "exit_code": code}),
            )
            .expect("a job")
        };
        assert_eq!(job("succeeded", Some(0)).exit_status(), Some(0));
        assert_eq!(job("failed", Some(3)).exit_status(), Some(3));
        assert_eq!(job("failed", Some(0)).exit_status(), Some(1));
        assert_eq!(job("failed", Some(300)).exit_status(), Some(1));
        assert_eq!(job("failed", None).exit_status(), Some(1));
        assert_eq!(job("timed_out", None).exit_status(), Some(124));
        assert_eq!(job("cancelled", Some(143)).exit_status(), Some(130));
        assert_eq!(job("running", None).exit_status(), None);
    }

    #[test]
    fn urls_and_ids() {
        assert_eq!(
            base_url("http://h:8080/").ok().as_deref(),
            Some("http://h:8080")
        );
        assert_eq!(
            base_url("https://h/nb//").ok().as_deref(),
            Some("https://h/nb")
        );
        assert!(base_url("h:8080").is_err());
        assert!(base_url("ftp://h").is_err());
        assert_eq!(crate::http::encode_segment("a/b c"), "a%2Fb%20c");
    }
}
