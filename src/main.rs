//! The `notebox` command: argument parsing and dispatch only.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use notebox::auth::{self, Accounts};
use notebox::Config;

#[derive(Parser)]
#[command(
    name = "notebox",
    version,
    about = "A lab's own Gradient Notebooks on one GPU workstation"
)]
struct Cli {
    /// Config file (default: $NOTEBOX_CONFIG, then /etc/notebox/config.toml, then built-in defaults)
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server
    Serve,
    /// Manage accounts
    #[command(subcommand)]
    User(UserCommand),
    /// Manage personal access tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check Docker, GPUs, the data directory and the config, and explain any fix
    Doctor,
    /// Run and follow headless jobs through a Notebox server's API
    #[command(subcommand)]
    Job(notebox::jobs::client::JobCommand),
    /// Show what the GPU inventory sees
    Gpus {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Take N samples back to back and report what one costs (for docs/PERFORMANCE.md)
        #[arg(long, value_name = "N")]
        measure: Option<u32>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account
    Add {
        name: String,
        /// Make the account an admin
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input instead of asking for it
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's password (ends its sessions)
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts
    List,
    /// Disable an account: its sessions and tokens stop at once and its notebooks stop
    /// (as on the admin page)
    Disable { name: String },
    /// Enable a disabled account again
    Enable { name: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a personal access token and print it (only the token, on stdout)
    Create {
        user: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn main() -> ExitCode {
    notebox::platform::systemd::return_big_allocations_to_the_system();
    let cli = Cli::parse();
    // `notebox job` is a client of a server's API: no config, no logging setup, and its
    // own (current-thread) runtime, so it is dispatched before either.
    if let Command::Job(job) = cli.command {
        return notebox::jobs::client::run(job);
    }
    init_logging();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("notebox: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("notebox: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::User(cmd) => user_command(config, cmd).await,
            Command::Token(TokenCommand::Create { user, name }) => {
                token_create(config, &user, &name).await
            }
            Command::Doctor => doctor(&config).await,
            Command::Gpus {
                json,
                measure: None,
            } => gpus(&config, json),
            Command::Gpus {
                measure: Some(n), ..
            } => measure_gpu_sampling(&config, n),
            // Dispatched above, before the config and the runtime.
            Command::Job(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("notebox: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NOTEBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // bollard logs each request's body at debug level, and a container's create request
    // holds its environment (Jupyter's token, members' secrets): its lines below info
    // are never written, whatever NOTEBOX_LOG asks for.
    let no_engine_bodies = filter_fn(|meta| {
        !(meta.target().starts_with("bollard") && *meta.level() > tracing::Level::INFO)
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_filter(filter.and(no_engine_bodies)),
        )
        .init();
}

async fn serve(config: Config) -> Result<(), String> {
    let addr = config.listen;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        format!("cannot listen on {addr}: {e} (set `listen` in the config or NOTEBOX_LISTEN)")
    })?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(config = %config.source, data_dir = %config.data_dir.display(), "starting notebox {}", env!("CARGO_PKG_VERSION"));
    let url = if bound.ip().is_unspecified() {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "this-machine".into());
        format!("http://{host}:{}/", bound.port())
    } else {
        format!("http://{bound}/")
    };
    println!("Notebox is listening on {bound}; open {url} in a browser.");
    let _ = std::io::stdout().flush();
    notebox::run(config, listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn accounts(config: &Config) -> Result<Accounts, String> {
    let c = config.clone();
    let db = tokio::task::spawn_blocking(move || notebox::open_database(&c))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Accounts::new(db, config))
}

fn read_password(from_stdin: bool, prompt: &str) -> Result<String, String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err("no terminal to ask for a password; pass it with --password-stdin".into());
    }
    let first = rpassword::prompt_password(prompt).map_err(|e| e.to_string())?;
    let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
    if first != again {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

async fn user_command(config: Config, cmd: UserCommand) -> Result<(), String> {
    let accounts = accounts(&config).await?;
    match cmd {
        UserCommand::Add {
            name,
            admin,
            password_stdin,
        } => {
            auth::validate_username(&name).map_err(|e| e.to_string())?;
            let password = read_password(password_stdin, &format!("Password for {name}: "))?;
            let user = accounts
                .add_user(&name, &password, admin)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "added {}{}",
                user.username,
                if user.is_admin { " (admin)" } else { "" }
            );
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let user = accounts
                .user_by_name(&name)
                .await
                .map_err(|e| e.to_string())?;
            let password = read_password(
                password_stdin,
                &format!("New password for {}: ", user.username),
            )?;
            accounts
                .set_password(user.id, &password, None)
                .await
                .map_err(|e| e.to_string())?;
            auth::forget_initial_password(&config.data_dir, &user.username);
            eprintln!(
                "password changed for {}; their sessions were ended",
                user.username
            );
        }
        UserCommand::List => {
            let users = accounts.list_users().await.map_err(|e| e.to_string())?;
            println!(
                "{:<32} {:<7} {:<9} {:<12} CREATED",
                "USERNAME", "ROLE", "STATUS", "SOURCE"
            );
            for u in users {
                println!(
                    "{:<32} {:<7} {:<9} {:<12} {}",
                    u.username,
                    if u.is_admin { "admin" } else { "member" },
                    if u.disabled { "disabled" } else { "active" },
                    u.source,
                    notebox::web::views::datetime(u.created_at)
                );
            }
        }
        UserCommand::Disable { name } => set_disabled(&accounts, &name, true).await?,
        UserCommand::Enable { name } => set_disabled(&accounts, &name, false).await?,
    }
    Ok(())
}

/// `user disable` / `user enable`: the same change as the admin page's. The running
/// server sees it within a second (the credentials epoch): sessions, tokens and open
/// WebSockets end, and its reconciler stops the notebooks asked to stop here.
async fn set_disabled(accounts: &auth::Accounts, name: &str, disabled: bool) -> Result<(), String> {
    let user = accounts
        .user_by_name(name)
        .await
        .map_err(|e| e.to_string())?;
    accounts
        .set_disabled(user.id, disabled)
        .await
        .map_err(|e| e.to_string())?;
    if !disabled {
        eprintln!("enabled {}", user.username);
        return Ok(());
    }
    let id = user.id;
    let stopped = accounts
        .db()
        .call(move |c| {
            notebox::db::lifecycle::request_stop_all_of(c, id, "Stopping: the account was disabled")
        })
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "disabled {}; their sessions and tokens were ended and {stopped} notebook(s) asked to stop",
        user.username
    );
    Ok(())
}

async fn token_create(config: Config, username: &str, name: &str) -> Result<(), String> {
    let accounts = accounts(&config).await?;
    let user = accounts
        .user_by_name(username)
        .await
        .map_err(|e| e.to_string())?;
    let (token, _) = accounts
        .create_token(user.id, name)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "token '{name}' for {}: it is shown only this once",
        user.username
    );
    println!("{token}");
    Ok(())
}

fn gpus(config: &Config, json: bool) -> Result<(), String> {
    let (inventory, reason) = notebox::gpu::open_inventory(config);
    let gpus = inventory.sample().map_err(|e| e.to_string())?;
    if json {
        let out = notebox::model::wire::Inventory {
            backend: inventory.backend(),
            reason: reason.clone(),
            gpus: gpus.clone(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if gpus.is_empty() {
        println!(
            "No GPUs (backend: {}{}).",
            inventory.backend(),
            reason.map(|r| format!("; {r}")).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "GPU inventory: {} ({} GPUs)",
        inventory.backend(),
        gpus.len()
    );
    for g in &gpus {
        let util = g
            .utilization_percent
            .map(|u| format!("{u}%"))
            .unwrap_or_else(|| "-".into());
        let temp = g
            .temperature_c
            .map(|t| format!("{t}°C"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>2}  {}  {}  {} / {} MiB  util {}  temp {}",
            g.index, g.uuid, g.name, g.memory_used_mib, g.memory_total_mib, util, temp
        );
        for p in &g.processes {
            println!("      pid {:>7}  {} MiB", p.pid, p.used_memory_mib);
        }
    }
    Ok(())
}

/// CPU time of this process so far, in seconds (utime + stime from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn measure_gpu_sampling(config: &Config, n: u32) -> Result<(), String> {
    let (inventory, reason) = notebox::gpu::open_inventory(config);
    let first = inventory.sample().map_err(|e| e.to_string())?;
    let gpus = first.len().max(1);
    let n = n.max(1);
    let (cpu0, wall0) = (cpu_seconds(), std::time::Instant::now());
    for _ in 0..n {
        inventory.sample().map_err(|e| e.to_string())?;
    }
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    let per_sample_ms = cpu * 1000.0 / f64::from(n);
    let per_gpu_ms = per_sample_ms / gpus as f64;
    println!(
        "backend {} ({} GPUs{}): {n} samples, {:.3} ms wall and {:.3} ms CPU per sample ({:.3} ms CPU per GPU)",
        inventory.backend(),
        first.len(),
        reason.map(|r| format!("; {r}")).unwrap_or_default(),
        wall * 1000.0 / f64::from(n),
        per_sample_ms,
        per_gpu_ms
    );
    println!(
        "at 1 Hz on 8 GPUs that is {:.3}% of one core",
        per_gpu_ms * 8.0 / 1000.0 * 100.0
    );
    Ok(())
}

async fn doctor(config: &Config) -> Result<(), String> {
    use notebox::doctor::Level;
    let checks = notebox::doctor::run_checks(config).await;
    println!("notebox doctor {}", env!("CARGO_PKG_VERSION"));
    for c in &checks {
        let mark = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("  [{mark}] {:<18} {}", c.name, c.message);
        if let Some(fix) = &c.fix {
            if c.level != Level::Ok {
                println!("         {:<18} fix: {fix}", "");
            }
        }
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if failed > 0 {
        return Err(format!(
            "{failed} problem(s) keep notebooks from running; see the fixes above"
        ));
    }
    println!("Notebooks can run.");
    Ok(())
}
