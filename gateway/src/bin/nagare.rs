//! The `nagare` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nagare_authorizer::dev::{self, DevClaims};
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::{client, serve, telemetry, wiring};

#[derive(Parser)]
#[command(
    name = "nagare",
    version,
    about = "Nagare: a streaming gateway for generative AI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: REST, SSE and WebSocket on --listen, gRPC on --grpc-listen.
    Serve {
        /// TOML config file; NAGARE__SECTION__KEY environment variables and flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// Address for gRPC, e.g. 127.0.0.1:50051 (the default; port 0 picks a free port).
        #[arg(long)]
        grpc_listen: Option<String>,
        /// Model provider: mock (embedded, the default) or bedrock.
        #[arg(long)]
        provider: Option<String>,
        /// Where embedded state lives (the dev-mode token secret).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Chat over a WebSocket, printing the answer as it streams in.
    Chat {
        /// The message to send.
        message: String,
        /// The server's WebSocket URL: ws://, or wss:// (the system's trusted roots, or the
        /// bundle SSL_CERT_FILE names).
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        /// A JWT; defaults to the NAGARE_TOKEN environment variable.
        #[arg(long, env = "NAGARE_TOKEN", hide_env_values = true)]
        token: String,
        /// A model alias or id.
        #[arg(long)]
        model: Option<String>,
        /// Continue this conversation (its id is printed after every answer).
        #[arg(long)]
        conversation: Option<String>,
    },
    /// Create the DynamoDB tables named in [store] if they do not exist (for local endpoints and
    /// tests; deploy/ creates them on AWS). Honours AWS_ENDPOINT_URL_DYNAMODB.
    CreateTables {
        /// TOML config file; NAGARE__STORE__* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Knowledge bases on the embedded store.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
    /// The browser app.
    Web {
        #[command(subcommand)]
        command: WebCommand,
    },
    /// Mint a dev-mode token for a server using the same --data-dir.
    Token {
        /// The user the token speaks for.
        #[arg(long)]
        sub: String,
        /// Scopes to grant; repeatable.
        #[arg(long = "scope", default_value = "chat")]
        scopes: Vec<String>,
        /// Tenant for cache and limit isolation; defaults to the sub.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Write a new dev secret even though the data dir holds a server's database (a server
        /// running on it must be restarted to accept the new tokens).
        #[arg(long)]
        new_secret: bool,
        /// Print a link that signs the browser app in: the server's URL with the token in the
        /// fragment, which the browser keeps to itself.
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://127.0.0.1:8080")]
        link: Option<String>,
    },
}

#[derive(Subcommand)]
enum WebCommand {
    /// Write the app's files for a bucket (S3 behind CloudFront), talking to the stack that
    /// `[web]` names (NAGARE__WEB__API_URL, NAGARE__WEB__WS_URL, ...).
    Export {
        /// The folder to write into.
        #[arg(long)]
        out: PathBuf,
        /// TOML config file; NAGARE__WEB__* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Put text, Markdown, HTML and PDF files (folders recursively) into a knowledge base, creating
    /// it if needed; safe while `nagare serve` runs on the same --data-dir.
    Ingest {
        /// The knowledge base.
        #[arg(long)]
        kb: String,
        /// The tenant it belongs to (a token's tenant claim, or its sub).
        #[arg(long, required_unless_present = "global", conflicts_with = "global")]
        tenant: Option<String>,
        /// Into the knowledge bases shared with every tenant (read-only to them).
        #[arg(long)]
        global: bool,
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Files and folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve {
            config: file,
            listen,
            grpc_listen,
            provider,
            data_dir,
        } => serve(
            file,
            Overrides {
                listen,
                grpc_listen,
                provider,
                data_dir,
            },
        ),
        Command::Chat {
            message,
            url,
            token,
            model,
            conversation,
        } => chat(
            &url,
            &token,
            &message,
            model.as_deref(),
            conversation.as_deref(),
        ),
        Command::CreateTables { config: file } => create_tables(file),
        Command::Web {
            command: WebCommand::Export { out, config: file },
        } => web_export(file, &out),
        Command::Kb {
            command:
                KbCommand::Ingest {
                    kb,
                    tenant,
                    global,
                    data_dir,
                    paths,
                },
        } => {
            let owner = match (global, tenant.as_deref()) {
                (true, _) => nagare_gateway::knowledge::SHARED_TENANT,
                (false, Some(tenant)) if !tenant.is_empty() => tenant,
                (false, _) => {
                    eprintln!("nagare kb ingest: give a non-empty --tenant, or --global");
                    return ExitCode::from(2);
                }
            };
            ingest(&kb, owner, &data_dir, &paths)
        }
        Command::Token {
            sub,
            scopes,
            tenant,
            ttl,
            data_dir,
            new_secret,
            link,
        } => token(
            sub,
            scopes,
            tenant,
            &ttl,
            &data_dir,
            new_secret,
            link.as_deref(),
        ),
    }
}

fn serve(file: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    let config = match config::load(file.as_deref(), &ProcessEnv, &overrides) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), 2),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("starting the async runtime: {e}"), 1),
    };
    // The trace exporter's channel lives on the runtime; the guard is dropped (flushing the last
    // spans) before the runtime is.
    let _telemetry = {
        let _inside = runtime.enter();
        match telemetry::init(config.log_format, &config.traces) {
            Ok(t) => t,
            Err(e) => return fail(&e.to_string(), 2),
        }
    };
    match runtime.block_on(serve::run(config, serve::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "nagare serve failed");
            fail(&e.to_string(), 1)
        }
    }
}

fn web_export(file: Option<PathBuf>, out: &std::path::Path) -> ExitCode {
    let config = match config::load(file.as_deref(), &ProcessEnv, &Overrides::default()) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), 2),
    };
    match nagare_gateway::web::export(&config.web, out) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("writing to {}: {e}", out.display()), 1),
    }
}

fn token(
    sub: String,
    scopes: Vec<String>,
    tenant: Option<String>,
    ttl: &str,
    data_dir: &std::path::Path,
    new_secret: bool,
    link: Option<&str>,
) -> ExitCode {
    if sub.trim().is_empty() {
        return fail("--sub must not be empty", 2);
    }
    if let Some(url) = link
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return fail(
            &format!("--link {url:?}: use the server's http:// or https:// URL"),
            2,
        );
    }
    let Some(ttl) = dev::parse_ttl(ttl) else {
        return fail(
            &format!("--ttl {ttl:?}: use a number with s, m, h or d, e.g. 1h"),
            2,
        );
    };
    let secret = match wiring::token_secret(data_dir, new_secret) {
        Ok(s) => s,
        Err(e) => return fail(&e, 1),
    };
    match dev::mint(
        &secret,
        &DevClaims {
            sub,
            tenant,
            scopes,
            ttl,
        },
    ) {
        Ok(t) => {
            match link {
                Some(url) => println!("{}/#token={t}", url.trim_end_matches('/')),
                None => println!("{t}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("signing the token: {e}"), 1),
    }
}

fn ingest(kb: &str, tenant: &str, data_dir: &std::path::Path, paths: &[PathBuf]) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("starting the async runtime: {e}"), 1),
    };
    let config = match config::load(None, &ProcessEnv, &Overrides::default()) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), 2),
    };
    let database = data_dir.join(wiring::DATABASE_FILE);
    let max = config.knowledge.max_document_bytes;
    let report = match runtime.block_on(wiring::ingest(&database, tenant, kb, paths, max)) {
        Ok(report) => report,
        Err(e) => return fail(&e.to_string(), 1),
    };
    let mut refused = 0;
    for (file, outcome) in report {
        match outcome {
            wiring::Ingested::Stored(info) => println!(
                "{}: {} ({} passage{})",
                file.display(),
                info.document_id,
                info.passages,
                if info.passages == 1 { "" } else { "s" }
            ),
            wiring::Ingested::Skipped => {
                println!(
                    "{}: skipped (not text, Markdown, HTML or PDF)",
                    file.display()
                )
            }
            wiring::Ingested::Refused(e) => {
                refused += 1;
                eprintln!("{}: refused: {e}", file.display());
            }
        }
    }
    if refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn create_tables(file: Option<PathBuf>) -> ExitCode {
    let config = match config::load(file.as_deref(), &ProcessEnv, &Overrides::default()) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), 2),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("starting the async runtime: {e}"), 1),
    };
    match runtime.block_on(wiring::create_tables(&config)) {
        Ok(report) => {
            for (table, created) in report {
                println!("{table}: {}", if created { "created" } else { "exists" });
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("creating the tables: {e}"), 1),
    }
}

fn chat(
    url: &str,
    token: &str,
    message: &str,
    model: Option<&str>,
    conversation: Option<&str>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&format!("starting the async runtime: {e}"), 1),
    };
    let mut stdout = std::io::stdout();
    let chat = client::chat(url, token, message, model, conversation, &mut stdout);
    match runtime.block_on(chat) {
        Ok((conversation_id, done)) => {
            println!();
            eprintln!(
                "[{} · {} in / {} out tokens · {} ms{}]",
                done["stop_reason"].as_str().unwrap_or_default(),
                done["usage"]["input_tokens"],
                done["usage"]["output_tokens"],
                done["latency_ms"],
                conversation_id
                    .map(|id| format!(" · --conversation {id}"))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, 1),
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("nagare: {message}");
    ExitCode::from(code)
}
