//! `kestrel server`: the fleet's control server. Agents connect over
//! gRPC/TLS (`--listen`), operators use the HTTP API and dashboard
//! (`--http`, TLS with the same certificate) or `kestrel ctl`. State lives
//! in SQLite in the data directory.

pub mod api_client;
pub mod bench;
pub mod conn;
pub mod ctl;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod json;
pub mod pg;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kestrel_control::pb::control_server::ControlServer;
use tokio_stream::StreamExt;

/// `kestrel server` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address for the agents' gRPC/TLS listener.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address for the HTTP API and dashboard (HTTPS, same certificate).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8444")]
    pub http: SocketAddr,
    /// Data directory: CA, certificate, tokens and the SQLite database.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kestrel-server")]
    pub data: PathBuf,
    /// Server certificate (PEM) to use instead of the one made in --data.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS name or IP address for the certificate made on first
    /// start (localhost, 127.0.0.1, ::1 and the host name are always in);
    /// repeat for several.
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// An agent with no heartbeat for this many seconds is offline
    /// (default: three missed heartbeats at the agents' default 30 s).
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub offline_after_secs: u64,
    /// Database: a postgres://USER@HOST:PORT/DB URL, for operators who
    /// need HA. [default: SQLite, DATA/kestrel.db]
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Heartbeats kept per agent in the database.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub history: u32,
    /// Refuse the fleet-wide token (DATA/enroll.token): only per-host
    /// tokens (`kestrel ctl token create`) enroll agents.
    #[arg(long)]
    pub no_fleet_token: bool,
    /// A gRPC connection that has not authenticated (enrolled, or opened
    /// its stream with its secret) this many seconds after it was accepted,
    /// TLS handshake included, is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub auth_timeout_secs: u64,
    /// Most connections one address may hold that have not authenticated
    /// yet (gRPC), or at all (HTTP); raise it for many agents behind one
    /// NAT address.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_pending_per_ip: usize,
    /// Log verbosity (RUST_LOG overrides).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Raises the open-file limit to its hard maximum: one socket per agent.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill and then pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

/// `db` without its password, for messages.
fn redact(db: &str) -> String {
    match (db.find("://"), db.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &db[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &db[..s + 3], &db[at..]),
                None => db.to_string(),
            }
        }
        _ => db.to_string(),
    }
}

/// Reads a token file, or creates it with a new random token.
fn token_file(path: &Path) -> Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok((t.trim().to_string(), false)),
        Ok(_) => bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = kestrel_control::random_hex(24);
            kestrel_control::write_private(path, &format!("{t}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok((t, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServerArgs) -> Result<()> {
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kestrel-server")
        .build()?;
    rt.block_on(serve(args, nofile))
}

async fn serve(args: ServerArgs, nofile: u64) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    let own = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    let (identity, created) = tls::load_or_create(&args.data, own, &args.sans)?;
    let (enroll, new_enroll) = if args.no_fleet_token {
        (None, false)
    } else {
        let (t, new) = token_file(&args.data.join("enroll.token"))?;
        (Some(t), new)
    };
    let (admin, new_admin) = token_file(&args.data.join("admin.token"))?;
    if created || new_enroll || new_admin {
        if let Some(ca) = &identity.ca_file {
            println!("CA certificate (give it to agents): {}", ca.display());
        }
        if enroll.is_some() {
            println!(
                "enrollment token: {}",
                args.data.join("enroll.token").display()
            );
        }
        println!("admin token: {}", args.data.join("admin.token").display());
    }
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| args.data.join("kestrel.db").display().to_string());
    let (history, offline_after) = (
        args.history,
        Duration::from_secs(args.offline_after_secs.max(1)),
    );
    // Both block (a PostgreSQL client runs its own runtime).
    let fleet = tokio::task::spawn_blocking(move || -> Result<fleet::Fleet> {
        let store: Arc<store::Store> = Arc::from(
            store::open(&db, history)
                .with_context(|| format!("opening the database {}", redact(&db)))?,
        );
        Ok(fleet::Fleet::load(store, offline_after)?)
    })
    .await??;
    let fleet = Arc::new(fleet);

    let grpc_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let http_listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {} (--http)", args.http))?;

    let svc = grpc::Service {
        fleet: fleet.clone(),
        enroll_sha256: enroll.as_deref().map(kestrel_control::sha256_hex),
        refusals: conn::Throttle::default(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Descriptors: the HTTP listener's share, a reserve for the database,
    // logs and the runtime, the rest for agents.
    let grpc_limits = conn::Limits {
        auth_timeout: Duration::from_secs(args.auth_timeout_secs.max(1)),
        pending_per_ip: args.max_pending_per_ip.max(1),
        max_conns: (nofile as usize)
            .saturating_sub(HTTP_MAX_CONNS + RESERVED_FDS)
            .max(16),
    };
    let http_limits = conn::Limits {
        auth_timeout: HTTP_LIFETIME,
        pending_per_ip: args.max_pending_per_ip.clamp(1, HTTP_MAX_CONNS),
        max_conns: HTTP_MAX_CONNS,
    };
    let grpc_tls = tokio_rustls::TlsAcceptor::from(tls::rustls_server(&identity, &[b"h2"])?);
    let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(256);
    let grpc_accept = tokio::spawn(conn::accept_loop(
        grpc_listener,
        conn::Registry::new("grpc", grpc_limits),
        grpc_tls,
        conn::GrpcConn,
        conn_tx,
        stop_rx.clone(),
    ));
    let grpc = {
        let mut stop = stop_rx.clone();
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // An agent needs one stream at a time: its session, or an
            // enrollment before it.
            .max_concurrent_streams(Some(8))
            .add_service(ControlServer::new(svc))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(conn_rx).map(Ok::<_, std::io::Error>),
                async move {
                    let _ = stop.changed().await;
                },
            )
    };
    let grpc = tokio::spawn(grpc);

    let api = Arc::new(http::Api::new(
        fleet.clone(),
        kestrel_control::sha256_hex(&admin),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::rustls_server(&identity, &[])?);
    let app = http::router(api);
    let http_task = tokio::spawn(serve_https(
        http_listener,
        conn::Registry::new("http", http_limits),
        acceptor,
        app,
        stop_rx.clone(),
    ));

    let flusher = {
        let fleet = fleet.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let f = fleet.clone();
                let _ = tokio::task::spawn_blocking(move || f.flush()).await;
            }
        })
    };

    tracing::info!(
        grpc = %args.listen,
        http = %args.http,
        data = %args.data.display(),
        agents = fleet.summary().total,
        nofile,
        max_agent_conns = grpc_limits.max_conns,
        offline_after_secs = args.offline_after_secs,
        "kestrel server listening"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc).await;
    let _ = grpc_accept.await;
    let _ = http_task.await;
    let _ = flusher.await;
    let f = fleet.clone();
    let _ = tokio::task::spawn_blocking(move || f.flush()).await;
    tracing::info!(
        heartbeats = fleet.heartbeats.load(std::sync::atomic::Ordering::Relaxed),
        heartbeats_unsaved = fleet
            .heartbeats_unsaved
            .load(std::sync::atomic::Ordering::Relaxed),
        "kestrel server stopped"
    );
    Ok(())
}

/// Most HTTP connections at once: the API and dashboard are for a few
/// operators.
const HTTP_MAX_CONNS: usize = 128;
/// Descriptors kept for the database, logs and the runtime.
const RESERVED_FDS: usize = 64;
/// An HTTP connection serves one request, and is closed this long after it
/// was accepted at the latest (slow clients cannot hold it).
const HTTP_LIFETIME: Duration = Duration::from_secs(30);

async fn serve_https(
    listener: tokio::net::TcpListener,
    reg: Arc<conn::Registry>,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let accept = tokio::spawn(conn::accept_loop(
        listener,
        reg,
        acceptor,
        |tls| tls,
        tx,
        stop.clone(),
    ));
    loop {
        let tls = tokio::select! {
            t = rx.recv() => match t {
                Some(t) => t,
                None => break,
            },
            _ = stop.changed() => break,
        };
        let peer = tls.get_ref().0.guard().peer();
        let app = app.clone().layer(axum::Extension(http::Peer(peer)));
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection");
            }
        });
    }
    let _ = accept.await;
}
