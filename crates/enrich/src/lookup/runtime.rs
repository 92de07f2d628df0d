//! Container names from the container runtimes' own APIs.
//!
//! The pipeline never waits for a runtime: a lookup answers from the cache
//! or queues the container for a background thread and answers nothing
//! this time; the next event of that container has the names. A runtime
//! whose socket is missing or dead is tried once, then only after a
//! backoff that doubles up to five minutes.
//!
//! Spoken here: the Docker Engine API (also podman's compatible socket) and
//! CRI-O's inspect endpoint, both HTTP over a unix socket, and the
//! Kubernetes CRI's ContainerStatus (gRPC) for containerd.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use lru::LruCache;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from one API answer at most: an inspect answer is a few KiB.
const MAX_ANSWER: u64 = 4 << 20;

/// Where the runtimes listen.
#[derive(Debug, Clone)]
pub struct RuntimeSockets {
    /// Docker Engine API.
    pub docker: PathBuf,
    /// podman's Docker-compatible API.
    pub podman: PathBuf,
    /// CRI-O's HTTP API.
    pub crio: PathBuf,
    /// containerd's CRI (gRPC) endpoint.
    pub containerd: PathBuf,
}

impl Default for RuntimeSockets {
    fn default() -> Self {
        RuntimeSockets {
            docker: PathBuf::from("/var/run/docker.sock"),
            podman: PathBuf::from("/run/podman/podman.sock"),
            crio: PathBuf::from("/var/run/crio/crio.sock"),
            containerd: PathBuf::from("/run/containerd/containerd.sock"),
        }
    }
}

/// Names of a container, as its runtime knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerNames {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Kubernetes pod name.
    pub pod_name: String,
    /// Kubernetes namespace.
    pub pod_namespace: String,
}

/// Lookup counters.
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// Requests sent to a runtime.
    pub lookups: AtomicU64,
    /// Requests that failed (socket missing, refused, bad answer).
    pub failures: AtomicU64,
    /// Lookups not queued because the queue was full.
    pub queue_full: AtomicU64,
}

type Cache = Arc<Mutex<LruCache<String, Option<ContainerNames>>>>;

/// Non-blocking front of the background resolver.
pub struct NameResolver {
    cache: Cache,
    pending: Arc<Mutex<HashSet<String>>>,
    tx: Sender<(&'static str, String)>,
    counters: Arc<RuntimeCounters>,
}

impl NameResolver {
    /// Starts the background thread.
    pub fn start(sockets: RuntimeSockets, entries: usize) -> Self {
        let cache: Cache = Arc::new(Mutex::new(LruCache::new(
            NonZeroUsize::new(entries.max(1)).unwrap(),
        )));
        let pending = Arc::new(Mutex::new(HashSet::new()));
        let counters = Arc::new(RuntimeCounters::default());
        let (tx, rx) = crossbeam_channel::bounded(1024);
        {
            let (cache, pending, counters) = (cache.clone(), pending.clone(), counters.clone());
            std::thread::Builder::new()
                .name("kestrel-runtime".into())
                .spawn(move || worker(sockets, rx, cache, pending, counters))
                .expect("starting the runtime lookup thread");
        }
        NameResolver {
            cache,
            pending,
            tx,
            counters,
        }
    }

    /// The counters.
    pub fn counters(&self) -> &RuntimeCounters {
        &self.counters
    }

    /// Names of container `id` of `runtime` if already known; otherwise
    /// queues a lookup and returns `None` at once.
    pub fn lookup(&self, runtime: &'static str, id: &str) -> Option<ContainerNames> {
        if !matches!(runtime, "docker" | "podman" | "crio" | "containerd") || id.is_empty() {
            return None;
        }
        if let Some(hit) = lock(&self.cache).get(id) {
            return hit.clone();
        }
        if !lock(&self.pending).insert(id.to_string()) {
            return None;
        }
        if let Err(e) = self.tx.try_send((runtime, id.to_string())) {
            lock(&self.pending).remove(id);
            if matches!(e, TrySendError::Full(_)) {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Backoff {
    until: Option<Instant>,
    step: Duration,
}

fn worker(
    sockets: RuntimeSockets,
    rx: Receiver<(&'static str, String)>,
    cache: Cache,
    pending: Arc<Mutex<HashSet<String>>>,
    counters: Arc<RuntimeCounters>,
) {
    let mut backoff: std::collections::HashMap<&'static str, Backoff> = Default::default();
    // gRPC needs an async runtime: a single-threaded one, built on the
    // first containerd lookup, lives on this thread.
    let mut tokio_rt: Option<tokio::runtime::Runtime> = None;
    for (runtime, id) in rx {
        let (socket, path) = match runtime {
            "docker" => (&sockets.docker, format!("/containers/{id}/json")),
            "podman" => (&sockets.podman, format!("/containers/{id}/json")),
            "containerd" => (&sockets.containerd, String::new()),
            _ => (&sockets.crio, format!("/containers/{id}")),
        };
        let b = backoff.entry(runtime).or_insert(Backoff {
            until: None,
            step: BACKOFF_MIN,
        });
        if b.until.is_some_and(|t| Instant::now() < t) {
            // The runtime was unreachable moments ago: not asked again
            // until the backoff ends; a later event re-queues the id.
            lock(&pending).remove(&id);
            continue;
        }
        counters.lookups.fetch_add(1, Ordering::Relaxed);
        let answer = if runtime == "containerd" {
            cri_lookup(&mut tokio_rt, socket, &id)
        } else {
            http_get(socket, &path).map_err(|e| e.to_string())
        };
        match answer {
            Ok((200, body)) => {
                b.until = None;
                b.step = BACKOFF_MIN;
                let names = match runtime {
                    "crio" => parse_crio(&body),
                    "containerd" => parse_cri_status(&body),
                    _ => parse_docker(&body),
                };
                lock(&cache).put(id.clone(), names);
            }
            Ok((404, _)) => {
                // The runtime answers but does not know it: remember that.
                b.until = None;
                lock(&cache).put(id.clone(), None);
            }
            Ok((status, _)) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(runtime, status, "container lookup failed");
            }
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                if b.until.is_none() && b.step == BACKOFF_MIN {
                    tracing::info!(runtime, socket = %socket.display(), error = %e,
                        "container runtime not reachable; names from it will be missing (retried with backoff)");
                }
                b.until = Some(Instant::now() + b.step);
                b.step = (b.step * 2).min(BACKOFF_MAX);
            }
        }
        lock(&pending).remove(&id);
    }
}

/// containerd's answer in the shape of an HTTP one: 200 with the encoded
/// status, or 404.
fn cri_lookup(
    rt: &mut Option<tokio::runtime::Runtime>,
    socket: &Path,
    id: &str,
) -> Result<(u16, Vec<u8>), String> {
    use prost::Message;
    if rt.is_none() {
        let built = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("async runtime: {e}"))?;
        *rt = Some(built);
    }
    let rt = rt.as_ref().expect("built above");
    match super::cri::container_status(rt, socket, id, IO_TIMEOUT)? {
        super::cri::Answer::Found(s) => Ok((200, s.encode_to_vec())),
        super::cri::Answer::NotFound => Ok((404, Vec::new())),
    }
}

/// CRI `ContainerStatus`, as re-encoded by `cri_lookup`.
fn parse_cri_status(body: &[u8]) -> Option<ContainerNames> {
    use prost::Message;
    let s = super::cri::ContainerStatus::decode(body).ok()?;
    let image = s
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .unwrap_or(s.image_ref.clone());
    let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    Some(ContainerNames {
        name: s
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        image,
        pod_name: label("io.kubernetes.pod.name"),
        pod_namespace: label("io.kubernetes.pod.namespace"),
    })
}

/// A GET over HTTP/1.0 on a unix socket: (status, body).
fn http_get(socket: &Path, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut answer)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&answer[..head_end]).map_err(|_| bad())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((status, dechunk(&answer[head_end + 4..])));
    }
    Ok((status, answer[head_end + 4..].to_vec()))
}

/// Joins the chunks of a chunked body (HTTP/1.0 requests should not get
/// one, but some servers send it anyway).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0) else {
            break;
        };
        let start = eol + 2;
        let Some(chunk) = body.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

fn label(labels: &serde_json::Value, key: &str) -> String {
    labels[key].as_str().unwrap_or_default().to_string()
}

/// Docker Engine API `GET /containers/{id}/json`.
fn parse_docker(body: &[u8]) -> Option<ContainerNames> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let labels = &v["Config"]["Labels"];
    Some(ContainerNames {
        name: v["Name"].as_str()?.trim_start_matches('/').to_string(),
        image: v["Config"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        pod_name: label(labels, "io.kubernetes.pod.name"),
        pod_namespace: label(labels, "io.kubernetes.pod.namespace"),
    })
}

/// CRI-O `GET /containers/{id}`.
fn parse_crio(body: &[u8]) -> Option<ContainerNames> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let labels = &v["labels"];
    Some(ContainerNames {
        name: label(labels, "io.kubernetes.container.name"),
        image: v["image"].as_str().unwrap_or_default().to_string(),
        pod_name: label(labels, "io.kubernetes.pod.name"),
        pod_namespace: label(labels, "io.kubernetes.pod.namespace"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_and_crio_answers() {
        let d = br#"{"Id":"abc","Name":"/web-1","Config":{"Image":"nginx:1.27","Labels":{"io.kubernetes.pod.name":"web","io.kubernetes.pod.namespace":"prod"}}}"#;
        let n = parse_docker(d).unwrap();
        assert_eq!(n.name, "web-1");
        assert_eq!(n.image, "nginx:1.27");
        assert_eq!(n.pod_name, "web");
        assert_eq!(n.pod_namespace, "prod");
        let c = br#"{"name":"k8s_app","image":"quay.io/x:1","labels":{"io.kubernetes.container.name":"app","io.kubernetes.pod.name":"p","io.kubernetes.pod.namespace":"ns"}}"#;
        let n = parse_crio(c).unwrap();
        assert_eq!((n.name.as_str(), n.pod_name.as_str()), ("app", "p"));
        assert!(parse_docker(b"not json").is_none());
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
        assert_eq!(dechunk(b"zz\r\n"), b"");
        assert_eq!(dechunk(b"10\r\nshort"), b"");
    }

    #[test]
    fn a_dead_socket_is_tried_once_then_backs_off() {
        let r = NameResolver::start(
            RuntimeSockets {
                docker: "/nonexistent/docker.sock".into(),
                ..Default::default()
            },
            16,
        );
        for i in 0..200 {
            assert_eq!(r.lookup("docker", &format!("{i:064x}")), None);
        }
        std::thread::sleep(Duration::from_millis(300));
        // The first request fails; the rest fall inside the backoff.
        assert_eq!(r.counters().lookups.load(Ordering::Relaxed), 1);
        assert_eq!(r.counters().failures.load(Ordering::Relaxed), 1);
    }
}
