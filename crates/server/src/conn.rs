//! The listeners' defences against connections that never become useful:
//! every connection must authenticate within a deadline of being accepted
//! (TLS handshake included) or it is closed; each source address may hold
//! only so many connections that have not authenticated; and the total is
//! kept under the open-file limit, the oldest unauthenticated connection
//! making room for a new one. Accept errors (`EMFILE`...) back off and are
//! logged at most once every few seconds.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection not authenticated this long after it was accepted is
    /// closed.
    pub auth_timeout: Duration,
    /// Most unauthenticated connections one address may hold.
    pub pending_per_ip: usize,
    /// Most connections in all.
    pub max_conns: usize,
}

/// Logs a repeated failure at most once per interval, with how many were
/// left out since the last line.
pub struct RateLimited {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(left_out)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        allow_at(&mut self.state.lock().unwrap(), self.every)
    }
}

fn allow_at(s: &mut (Option<Instant>, u64), every: Duration) -> Option<u64> {
    let now = Instant::now();
    match s.0 {
        Some(t) if now.duration_since(t) < every => {
            s.1 += 1;
            None
        }
        _ => {
            let left_out = std::mem::take(&mut s.1);
            s.0 = Some(now);
            Some(left_out)
        }
    }
}

/// [`RateLimited`] for several kinds of line, by name: refusals that
/// anyone on the network can provoke at will, each kind logged at most
/// once a second.
pub struct Throttle {
    state: Mutex<HashMap<&'static str, (Option<Instant>, u64)>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            state: Mutex::new(HashMap::new()),
        }
    }
}

impl Throttle {
    /// `Some(left_out)` when a line of this kind may be logged now.
    pub fn allow(&self, kind: &'static str) -> Option<u64> {
        let mut m = self.state.lock().unwrap();
        allow_at(m.entry(kind).or_insert((None, 0)), Duration::from_secs(1))
    }
}

/// What makes a connection end: set, then its task woken.
#[derive(Default)]
struct Kill {
    killed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Kill {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    /// Err once killed.
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the server",
            ));
        }
        Ok(())
    }

    /// Err once killed; otherwise remembers to wake the reader: a
    /// connection always has a read pending (TLS handshake, HTTP/2, HTTP/1
    /// waiting for a request), so waking it is enough to end it.
    fn check_reading(&self, cx: &Context<'_>) -> io::Result<()> {
        self.check()?;
        {
            let mut w = self.waker.lock().unwrap();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        // Killed while the waker was being stored: seen now.
        self.check()
    }
}

struct Entry {
    ip: IpAddr,
    authed: bool,
    kill: Arc<Kill>,
}

#[derive(Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Entry>,
    /// Unauthenticated connections by age (ids grow).
    pending: BTreeMap<u64, ()>,
    pending_per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    fn unpend(&mut self, id: u64, ip: IpAddr) {
        self.pending.remove(&id);
        if let Some(n) = self.pending_per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.pending_per_ip.remove(&ip);
            }
        }
    }
}

/// The connections of one listener.
pub struct Registry {
    name: &'static str,
    limits: Limits,
    table: Mutex<Table>,
    refused_log: RateLimited,
    evicted_log: RateLimited,
    expired_log: RateLimited,
    /// Accept errors.
    pub accept_log: RateLimited,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address already holds its share of unauthenticated connections.
    PerSource,
    /// Every connection is authenticated and there are `max_conns`.
    Full,
}

impl Registry {
    /// An empty registry; `name` names the listener in logs.
    pub fn new(name: &'static str, limits: Limits) -> Arc<Registry> {
        let every = Duration::from_secs(10);
        Arc::new(Registry {
            name,
            limits,
            table: Mutex::new(Table::default()),
            refused_log: RateLimited::new(every),
            evicted_log: RateLimited::new(every),
            expired_log: RateLimited::new(every),
            accept_log: RateLimited::new(every),
        })
    }

    /// Admits a connection from `peer`, or says why not (the caller drops
    /// it). Its deadline starts now.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Guard, Refused> {
        let ip = peer.ip();
        let kill = Arc::new(Kill::default());
        let id = {
            let mut t = self.table.lock().unwrap();
            if t.pending_per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.pending_per_ip {
                drop(t);
                if let Some(left_out) = self.refused_log.allow() {
                    tracing::warn!(listener = self.name, %peer, left_out,
                        limit = self.limits.pending_per_ip,
                        "connection refused: too many unauthenticated connections from this address");
                }
                return Err(Refused::PerSource);
            }
            if t.conns.len() >= self.limits.max_conns {
                let Some((&oldest, _)) = t.pending.iter().next() else {
                    drop(t);
                    if let Some(left_out) = self.refused_log.allow() {
                        tracing::warn!(listener = self.name, %peer, left_out,
                            limit = self.limits.max_conns,
                            "connection refused: connection limit reached");
                    }
                    return Err(Refused::Full);
                };
                // Removed now, so that the count drops at once; its
                // guard finds it gone.
                let e = t.conns.remove(&oldest).expect("pending is in conns");
                t.unpend(oldest, e.ip);
                e.kill.kill();
                if let Some(left_out) = self.evicted_log.allow() {
                    tracing::warn!(listener = self.name, evicted = %e.ip, left_out,
                        "connection limit reached: closed the oldest unauthenticated connection");
                }
            }
            t.next += 1;
            let id = t.next;
            t.conns.insert(
                id,
                Entry {
                    ip,
                    authed: false,
                    kill: kill.clone(),
                },
            );
            t.pending.insert(id, ());
            *t.pending_per_ip.entry(ip).or_insert(0) += 1;
            id
        };
        let reg = self.clone();
        let timeout = self.limits.auth_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            reg.expire(id);
        });
        Ok(Guard {
            reg: self.clone(),
            id,
            peer,
            kill,
        })
    }

    fn expire(&self, id: u64) {
        let mut t = self.table.lock().unwrap();
        let Some(e) = t.conns.get(&id) else { return };
        if e.authed {
            return;
        }
        let e = t.conns.remove(&id).expect("just found");
        t.unpend(id, e.ip);
        drop(t);
        e.kill.kill();
        if let Some(left_out) = self.expired_log.allow() {
            tracing::info!(listener = self.name, peer = %e.ip, left_out,
                timeout_secs = self.limits.auth_timeout.as_secs_f64(),
                "connection closed: not authenticated in time");
        }
    }

    fn authenticated(&self, id: u64) {
        let mut t = self.table.lock().unwrap();
        let Some(e) = t.conns.get_mut(&id) else {
            return;
        };
        if !e.authed {
            e.authed = true;
            let ip = e.ip;
            t.unpend(id, ip);
        }
    }

    fn release(&self, id: u64) {
        let mut t = self.table.lock().unwrap();
        if let Some(e) = t.conns.remove(&id) {
            if !e.authed {
                t.unpend(id, e.ip);
            }
        }
    }

    /// Connections held now, and how many of them are unauthenticated.
    pub fn counts(&self) -> (usize, usize) {
        let t = self.table.lock().unwrap();
        (t.conns.len(), t.pending.len())
    }
}

/// A connection's place in its registry, released when dropped.
pub struct Guard {
    reg: Arc<Registry>,
    id: u64,
    peer: SocketAddr,
    kill: Arc<Kill>,
}

impl Guard {
    /// The connection proved who it is: no deadline any more, and it no
    /// longer counts against its address.
    pub fn authenticated(&self) {
        self.reg.authenticated(self.id);
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// What the service sees of the connection.
    pub fn info(&self) -> ConnInfo {
        ConnInfo {
            reg: self.reg.clone(),
            id: self.id,
            peer: self.peer,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.reg.release(self.id);
    }
}

/// A connection as the gRPC service sees it (a request extension).
#[derive(Clone)]
pub struct ConnInfo {
    reg: Arc<Registry>,
    id: u64,
    /// The remote address.
    pub peer: SocketAddr,
}

impl ConnInfo {
    /// See [`Guard::authenticated`].
    pub fn authenticated(&self) {
        self.reg.authenticated(self.id);
    }
}

/// A TCP stream that ends (reads and writes fail) when its registry
/// closes it.
pub struct Tracked {
    tcp: TcpStream,
    guard: Guard,
}

impl Tracked {
    /// `tcp` tracked by `guard`.
    pub fn new(tcp: TcpStream, guard: Guard) -> Tracked {
        Tracked { tcp, guard }
    }

    /// Its registry entry.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.guard.kill.check_reading(cx)?;
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guard.kill.check()?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard.kill.check()?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A TLS connection to the gRPC service.
pub struct GrpcConn(pub tokio_rustls::server::TlsStream<Tracked>);

impl tonic::transport::server::Connected for GrpcConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.0.get_ref().0.guard().info()
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until `stop`: admits each connection, runs its
/// TLS handshake, and hands the finished ones to `tx`. A failing accept
/// (out of descriptors: the connection stays in the backlog) waits, 10 ms
/// doubling to 1 s, instead of spinning.
pub async fn accept_loop<T: Send + 'static>(
    listener: tokio::net::TcpListener,
    reg: Arc<Registry>,
    acceptor: tokio_rustls::TlsAcceptor,
    wrap: fn(tokio_rustls::server::TlsStream<Tracked>) -> T,
    tx: tokio::sync::mpsc::Sender<T>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let r = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (tcp, peer) = match r {
            Ok(x) => x,
            Err(e) => {
                if let Some(left_out) = reg.accept_log.allow() {
                    tracing::warn!(listener = reg.name, error = %e, left_out,
                        retry_in_ms = backoff.as_millis() as u64, "accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        let Ok(guard) = reg.admit(peer) else {
            continue;
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match acceptor.accept(Tracked::new(tcp, guard)).await {
                Ok(tls) => {
                    let _ = tx.send(wrap(tls)).await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn per_source_and_total_limits() {
        let reg = Registry::new(
            "test",
            Limits {
                auth_timeout: Duration::from_secs(60),
                pending_per_ip: 2,
                max_conns: 3,
            },
        );
        let a1 = reg.admit(addr("10.0.0.1:1")).unwrap();
        let a2 = reg.admit(addr("10.0.0.1:2")).unwrap();
        assert_eq!(
            reg.admit(addr("10.0.0.1:3")).err(),
            Some(Refused::PerSource)
        );
        // Authenticated connections do not count against the address.
        a1.authenticated();
        let a3 = reg.admit(addr("10.0.0.1:3")).unwrap();
        assert_eq!(reg.counts(), (3, 2));
        // Full: the oldest unauthenticated (a2) makes room.
        let b1 = reg.admit(addr("10.0.0.2:1")).unwrap();
        assert!(a2.kill.killed.load(Ordering::SeqCst));
        assert!(!a1.kill.killed.load(Ordering::SeqCst));
        assert_eq!(reg.counts(), (3, 2));
        a3.authenticated();
        b1.authenticated();
        assert_eq!(reg.admit(addr("10.0.0.3:1")).err(), Some(Refused::Full));
        drop((a1, a2));
        assert_eq!(reg.counts(), (2, 0));
    }

    #[tokio::test]
    async fn unauthenticated_connections_expire() {
        let reg = Registry::new(
            "test",
            Limits {
                auth_timeout: Duration::from_millis(50),
                pending_per_ip: 10,
                max_conns: 10,
            },
        );
        let slow = reg.admit(addr("10.0.0.1:1")).unwrap();
        let quick = reg.admit(addr("10.0.0.1:2")).unwrap();
        quick.authenticated();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(slow.kill.killed.load(Ordering::SeqCst));
        assert!(!quick.kill.killed.load(Ordering::SeqCst));
        assert_eq!(reg.counts(), (1, 0));
    }

    #[test]
    fn rate_limited_logs_count_what_they_leave_out() {
        let r = RateLimited::new(Duration::from_millis(100));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(r.allow(), Some(2));
    }
}
