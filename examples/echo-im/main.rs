//! echo-im: a small instant-messaging server and line client on liveline, and a demo that
//! shows heartbeats, failover after `kill -9`, exactly-once delivery and the dropping of a
//! silent client, all in one command:
//!
//! ```text
//! cargo run --release --example echo-im                 # the demo
//! cargo run --release --example echo-im -- server --listen 127.0.0.1:9000
//! cargo run --release --example echo-im -- client --user alice \
//!     --servers 127.0.0.1:9000,127.0.0.1:9001
//! ```

mod client;
mod cluster;
mod cluster_demo;
mod demo;
mod proto;
mod server;

use clap::{Args, Parser, Subcommand};
use liveline::config::Config;
use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "echo-im", about = "Instant messaging on liveline", version)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (default: the RUST_LOG variable, else info).
    #[arg(long, global = true)]
    log: Option<LevelFilter>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a chat server.
    Server(ServerArgs),
    /// Run an interactive client (reads commands from stdin; :help lists them).
    Client(ClientArgs),
    /// Two servers, three clients, a kill -9 and a failover, narrated (the default).
    Demo(DemoArgs),
}

/// The server's timeouts, in milliseconds.
#[derive(Args, Clone)]
struct ServerTiming {
    /// Heartbeat interval announced to clients: they ping after this long without writing
    /// (a client configured with a longer one adopts this).
    #[arg(long, default_value_t = 10_000)]
    ping_ms: u64,
    /// Drop a client it has read nothing from for this long (or that has read nothing
    /// waiting for it for this long). Must be longer than --ping-ms.
    #[arg(long, default_value_t = 30_000)]
    idle_ms: u64,
    /// Drop a connection that has not logged in by then.
    #[arg(long, default_value_t = 10_000)]
    handshake_ms: u64,
}

impl ServerTiming {
    fn config(&self) -> Result<Config, String> {
        checked(Config {
            ping_interval: Duration::from_millis(self.ping_ms),
            idle_timeout: Duration::from_millis(self.idle_ms),
            handshake_timeout: Duration::from_millis(self.handshake_ms),
            ..Config::default()
        })
    }
}

/// The client's timeouts, in milliseconds.
#[derive(Args, Clone)]
struct ClientTiming {
    /// Ping after this long without writing or reading; the server is taken for dead after
    /// twice this long without reading anything. A server announcing a shorter interval
    /// wins.
    #[arg(long, default_value_t = 10_000)]
    ping_ms: u64,
}

impl ClientTiming {
    fn config(&self) -> Result<Config, String> {
        let ping = Duration::from_millis(self.ping_ms);
        checked(Config {
            ping_interval: ping,
            // Only servers use it, but one setting must stay above the other.
            idle_timeout: ping.saturating_mul(3),
            ..Config::default()
        })
    }
}

/// The engine's own check, reported with the flag's name.
fn checked(cfg: Config) -> Result<Config, String> {
    cfg.validate().map(|()| cfg).map_err(|e| {
        let flag = match e.field {
            "ping_interval" => "--ping-ms",
            "idle_timeout" => "--idle-ms",
            "handshake_timeout" => "--handshake-ms",
            other => other,
        };
        format!("{flag}: {}", e.problem)
    })
}

#[derive(Args)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    #[command(flatten)]
    timing: ServerTiming,
    /// Messages held per offline user (oldest dropped beyond it).
    #[arg(long, default_value_t = 100)]
    max_held: usize,
    /// Seconds a held message is kept.
    #[arg(long, default_value_t = 300)]
    held_secs: u64,
    /// Require clients to present this token.
    #[arg(long)]
    token: Option<String>,
    /// Connections one IP address may hold at once (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_per_ip: u32,
    /// Join a cluster through Redis: its servers, comma separated, HOST:PORT, tried in
    /// order. Without it, this server stands alone.
    #[arg(long, value_delimiter = ',')]
    redis: Vec<String>,
    /// Event loops (threads), each with its own listener on the address (SO_REUSEPORT);
    /// users of different loops reach each other in the process. Default: one per core;
    /// with --redis, one (each loop is a node of the cluster, named NODE/0, NODE/1, ...);
    /// with --max-per-ip, one (the limit holds per loop).
    #[arg(long)]
    threads: Option<usize>,
    /// TLS: the server's certificate chain, PEM (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS: the server's private key, PEM (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Share the listen address with other echo-im servers started with --reuse-port too
    /// (SO_REUSEPORT: the kernel spreads connections over them). Without it, an address in
    /// use is an error.
    #[arg(long)]
    reuse_port: bool,
    /// This server's name, shown to clients (:info, and :users in a cluster): 1-64
    /// printable ASCII characters, no space or @ (default: its listen address).
    #[arg(long)]
    node: Option<String>,
}

#[derive(Args, Default)]
struct DemoArgs {
    /// Run the cluster demo instead: a Redis (redis-server on PATH) and two gateways.
    #[arg(long)]
    cluster: bool,
    /// Run the demo over TLS, with a throwaway certificate authority made at start.
    #[arg(long)]
    tls: bool,
}

#[derive(Args)]
struct ClientArgs {
    /// Your user name: 1-32 of a-z A-Z 0-9 - _ . (checked before connecting).
    #[arg(long)]
    user: String,
    /// Servers in order of preference, comma separated, each HOST:PORT (host names are
    /// resolved at start).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9000,127.0.0.1:9001"
    )]
    servers: Vec<String>,
    #[command(flatten)]
    timing: ClientTiming,
    /// Token to present to the server.
    #[arg(long)]
    token: Option<String>,
    /// Connect with TLS; servers' certificates are checked against --ca, and must carry
    /// the host name given in --servers.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// The certificate authority to trust, PEM (with --tls).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
}

/// Logs to stderr at the level of `--log`, else `RUST_LOG`, else `default`.
fn init_log(flag: Option<LevelFilter>, default: LevelFilter) {
    let level = flag.or_else(env_level).unwrap_or(default);
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    // Logs go to stderr; stdout carries the program's own output.
    let _ = TermLogger::init(level, config, TerminalMode::Stderr, ColorChoice::Never);
}

/// The first address `host:port` resolves to, or why it does not.
fn resolve(flag: &str, server: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let what = format!("{flag}: {server:?}");
    match server.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{what}: no address found")),
        Err(e) => Err(format!("{what}: {e} (expected HOST:PORT)")),
    }
}

/// The level `RUST_LOG` asks for: a level (`debug`), or `target=level` pairs separated by
/// commas (`liveline=debug`), of which the most verbose is used.
fn env_level() -> Option<LevelFilter> {
    let spec = std::env::var("RUST_LOG").ok()?;
    spec.split(',')
        .filter_map(|part| part.rsplit('=').next()?.trim().parse::<LevelFilter>().ok())
        .max()
}

/// The server's TLS settings from `--tls-cert` and `--tls-key`, if given.
fn tls_server(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("{flag}: {}: {e}", p.display()))
    };
    let (cert_pem, key_pem) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
    liveline::tls::server_config(&cert_pem, &key_pem)
        .map(Some)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))
}

/// The client's TLS settings from `--tls`, `--ca` and the first server's host name.
fn tls_client(
    on: bool,
    ca: Option<&std::path::Path>,
    servers: &[String],
) -> Result<Option<liveline::engine::ClientTls>, String> {
    if !on {
        return Ok(None);
    }
    let ca = ca.ok_or("--tls needs --ca FILE")?;
    let pem = std::fs::read(ca).map_err(|e| format!("--ca: {}: {e}", ca.display()))?;
    let config = liveline::tls::client_config(&pem).map_err(|e| format!("--ca: {e}"))?;
    let host = servers
        .first()
        .and_then(|s| s.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])))
        .unwrap_or("localhost")
        .to_string();
    let server_name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("--servers: {host:?} is not a name TLS can check: {e}"))?;
    Ok(Some(liveline::engine::ClientTls {
        config,
        server_name,
    }))
}

/// A flag value that cannot work: said once, exit code 2 (as for any bad argument).
fn refuse(why: &str) -> ! {
    eprintln!("echo-im: {why}");
    std::process::exit(2);
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Demo(DemoArgs::default())) {
        Command::Server(a) => {
            init_log(cli.log, LevelFilter::Info);
            let engine = a.timing.config().unwrap_or_else(|e| refuse(&e));
            server::run(server::ServerOptions {
                listen: a.listen,
                engine,
                max_held: a.max_held,
                held_age: Duration::from_secs(a.held_secs),
                token: a.token,
                max_per_ip: (a.max_per_ip > 0).then_some(a.max_per_ip),
                tls: tls_server(a.tls_cert.as_deref(), a.tls_key.as_deref())
                    .unwrap_or_else(|e| refuse(&e)),
                redis: a
                    .redis
                    .iter()
                    .map(|s| resolve("--redis", s))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_else(|e| refuse(&e)),
                reuse_port: a.reuse_port,
                // With --redis every loop is a node of its own: one unless asked.
                threads: a.threads.unwrap_or_else(|| {
                    if a.redis.is_empty() && a.max_per_ip == 0 {
                        std::thread::available_parallelism().map_or(1, |n| n.get())
                    } else {
                        1
                    }
                }),
                node: a
                    .node
                    .map(|n| {
                        let ok = (1..=64).contains(&n.len())
                            && n.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
                        if !ok {
                            refuse(&format!(
                                "--node: {n:?}: 1-64 printable ASCII characters, no space or @"
                            ));
                        }
                        n
                    })
                    .unwrap_or_else(|| a.listen.to_string()),
            })
        }
        Command::Client(a) => {
            // Errors only: everything else the user needs is printed as it happens.
            init_log(cli.log, LevelFilter::Error);
            let engine = a.timing.config().unwrap_or_else(|e| refuse(&e));
            if !proto::valid_name(&a.user) {
                refuse(&format!(
                    "--user: {:?} is not a valid name ({})",
                    a.user,
                    proto::NAME_RULE
                ));
            }
            let servers = a
                .servers
                .iter()
                .map(|s| resolve("--servers", s))
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| refuse(&e));
            let tls = tls_client(a.tls, a.ca.as_deref(), &a.servers).unwrap_or_else(|e| refuse(&e));
            match client::run(client::ClientOptions {
                user: a.user,
                servers,
                engine,
                token: a.token,
                tls,
            }) {
                Ok(code) => std::process::exit(code),
                Err(e) => Err(e),
            }
        }
        Command::Demo(DemoArgs { cluster: true, .. }) => cluster_demo::run(),
        Command::Demo(DemoArgs {
            cluster: false,
            tls,
        }) => {
            if std::env::args().len() <= 1 {
                println!(
                    "echo-im: no command given: running the demo (echo-im --help lists the others)"
                );
            }
            demo::run(tls)
        }
    };
    if let Err(e) = result {
        eprintln!("echo-im: {e}");
        std::process::exit(1);
    }
}
