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
    let cli = Cli::parse();
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("NOTEBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

async fn serve(config: Config) -> Result<(), String> {
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
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
            println!("{:<32} {:<7} {:<9} CREATED", "USERNAME", "ROLE", "STATUS");
            for u in users {
                println!(
                    "{:<32} {:<7} {:<9} {}",
                    u.username,
                    if u.is_admin { "admin" } else { "member" },
                    if u.disabled { "disabled" } else { "active" },
                    notebox::web::views::datetime(u.created_at)
                );
            }
        }
    }
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
