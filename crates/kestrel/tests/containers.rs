//! Namespaces, cgroups and network namespaces: every event says where it
//! happened. Real namespaces and cgroups, no container engine. Needs root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{container_cgroup_root, field, marker, Agent, PERL_CONN};

fn ns_inode(path: &str) -> String {
    std::fs::metadata(path).unwrap().ino().to_string()
}

/// The exec of `/bin/true MARK` (the marker also appears in the argv of
/// the shells that lead to it).
fn true_with(m: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |e| e["comm"] == "true" && e["argv"].as_str().is_some_and(|a| a.contains(m))
}

#[test]
fn unshared_namespaces_are_named() {
    let agent = Agent::start(&[]);
    let mark = marker("unshare");
    let status = Command::new("unshare")
        .args(["--uts", "--pid", "--mount", "--fork", "sh", "-c"])
        .arg(format!("hostname kestrel-ns-test && exec /bin/true {mark}"))
        .status()
        .unwrap();
    assert!(status.success());
    let ev = agent.wait_for("exec inside the namespaces", true_with(&mark));
    assert_eq!(field(&ev, "nodename"), "kestrel-ns-test");
    // sh is pid 1 of the new pid namespace and execs the command.
    assert_eq!(field(&ev, "ns_pid"), "1");
    assert_ne!(field(&ev, "pid"), "1");
    assert_ne!(field(&ev, "pid_ns"), ns_inode("/proc/self/ns/pid"));
    assert_ne!(field(&ev, "mnt_ns"), ns_inode("/proc/self/ns/mnt"));
    assert_eq!(field(&ev, "net_ns"), ns_inode("/proc/self/ns/net"));
    assert_eq!(field(&ev, "container_id"), "");
    agent.stop();
}

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Leaf first, up to the hierarchy's root; busy or shared parents
        // stay.
        let root = container_cgroup_root();
        let mut p = self.0.clone();
        while p != root && std::fs::remove_dir(&p).is_ok() {
            p.pop();
        }
    }
}

#[test]
fn cgroup_paths_give_container_identity() {
    let agent = Agent::start(&[]);
    let root = container_cgroup_root();
    let id = |n: u8| format!("{:x}", n).repeat(64);
    let uid = "1a2b3c4d-0000-1111-2222-333344445555";
    let uid_ = uid.replace('-', "_");
    let cases = [
        (format!("docker/{}", id(1)), "docker", id(1), ""),
        (format!("system.slice/docker-{}.scope", id(2)), "docker", id(2), ""),
        (
            format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{}.scope",
                id(3)
            ),
            "containerd",
            id(3),
            uid,
        ),
        (format!("kubepods/burstable/pod{uid}/{}", id(4)), "containerd", id(4), uid),
        (
            format!("kubepods.slice/kubepods-pod{uid_}.slice/crio-{}.scope", id(5)),
            "crio",
            id(5),
            uid,
        ),
        (format!("machine.slice/libpod-{}.scope", id(6)), "podman", id(6), ""),
    ];
    for (rel, runtime, cid, pod) in &cases {
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        let _cg = Cgroup(dir.clone());
        let mark = marker("cgroup");
        // The shell moves itself into the cgroup, then execs: the exec and
        // the connect after it happen inside.
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec bash -c '/bin/true {mark}; exec 3<>/dev/tcp/127.0.0.1/1' 2>/dev/null",
            dir.display()
        );
        Command::new("sh").arg("-c").arg(&script).status().unwrap();
        let ev = agent.wait_for(rel, true_with(&mark));
        assert_eq!(field(&ev, "container_runtime"), *runtime, "{rel}");
        assert_eq!(field(&ev, "container_id"), cid, "{rel}");
        assert_eq!(field(&ev, "pod_uid"), *pod, "{rel}");
        let dir_ino = std::fs::metadata(&dir).unwrap().ino();
        assert_ne!(field(&ev, "cgroup_id"), "0");
        let bash_pid = field(&ev, "ppid").to_string();
        // The connect carries no cgroup path: its container comes from the
        // cache the exec filled (same cgroup id).
        let conn = agent.wait_for("connect from the cgroup", |e| {
            e["data_type"] == "42" && e["tgid"].as_str() == Some(bash_pid.as_str())
        });
        assert_eq!(field(&conn, "container_id"), cid, "{rel} connect");
        assert_eq!(field(&conn, "cgroup_id"), field(&ev, "cgroup_id"));
        let _ = dir_ino;
    }
    agent.stop();
}

/// The kernel side caches a process's namespaces and cgroup between its
/// events: a process moved to another cgroup, then entering a new network
/// namespace, must be reported where it is at each event. Perl (in
/// perl-base, always installed) is the subject: one single-threaded process
/// that connects, is moved, connects, unshares, connects.
#[test]
fn a_process_that_moves_is_reported_where_it_is_now() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let agent = Agent::start(&[]);
    let body = r#"
        conn(); print "moved?\n"; <STDIN>;
        conn();
        syscall(272, 0x40000000) == 0 or die "unshare(CLONE_NEWNET): $!";
        conn(); print readlink("/proc/self/ns/net"), "\n";
    "#;
    let script = format!("{PERL_CONN}{body}");
    let mut child = Command::new("perl")
        .arg("-e")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "moved?\n");

    let dir = container_cgroup_root().join(marker("move"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cg = Cgroup(dir.clone());
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let new_net = line
        .trim()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .to_string();
    assert!(child.wait().unwrap().success());
    assert!(new_net.parse::<u64>().is_ok(), "perl printed {line:?}");

    let tgid = pid.to_string();
    let mine = |e: &serde_json::Value| e["data_type"] == "42" && e["tgid"] == tgid.as_str();
    agent.wait_for("the connect from the new network namespace", |e| {
        mine(e) && e["net_ns"] == new_net.as_str()
    });
    let conns: Vec<_> = agent.events().into_iter().filter(|e| mine(e)).collect();
    assert_eq!(conns.len(), 3, "{conns:#?}");
    let host_net = ns_inode("/proc/self/ns/net");
    let (before, moved, unshared) = (&conns[0], &conns[1], &conns[2]);
    assert_eq!(field(before, "net_ns"), host_net);
    assert_eq!(field(moved, "net_ns"), host_net);
    assert_eq!(field(unshared, "net_ns"), new_net);
    assert_ne!(field(moved, "cgroup_id"), field(before, "cgroup_id"));
    assert_eq!(
        field(moved, "cgroup_id"),
        std::fs::metadata(&dir).unwrap().ino().to_string(),
        "the cgroup id is its directory's inode"
    );
    assert_eq!(field(unshared, "cgroup_id"), field(moved, "cgroup_id"));
    agent.stop();
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

struct Netns(String, String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.1]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn connect_inside_a_network_namespace_reports_its_addresses() {
    use std::os::fd::AsRawFd;
    let agent = Agent::start(&[]);
    let n = std::process::id() % 10000;
    let ns = format!("kestrel-t{n}");
    let (host_if, ns_if) = (format!("kv0-{n}"), format!("kv1-{n}"));
    ip(&["netns", "add", &ns]);
    let _guard = Netns(ns.clone(), host_if.clone());
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
    ]);
    ip(&["link", "set", &ns_if, "netns", &ns]);
    ip(&["addr", "add", "198.51.100.1/24", "dev", &host_if]);
    ip(&["link", "set", &host_if, "up"]);
    ip(&["-n", &ns, "addr", "add", "198.51.100.2/24", "dev", &ns_if]);
    ip(&["-n", &ns, "link", "set", &ns_if, "up"]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);

    // A listener inside the namespace: a thread enters it and binds; the
    // socket stays in that namespace.
    let ns_file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    let listener = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd, in this thread only.
            assert_eq!(
                unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            std::net::TcpListener::bind("198.51.100.2:0").unwrap()
        })
        .join()
        .unwrap()
    });
    let port = listener.local_addr().unwrap().port();
    let st = Command::new("ip")
        .args(["netns", "exec", &ns, "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/198.51.100.2/{port} && sleep 1"))
        .status()
        .unwrap();
    assert!(st.success());
    let ev = agent.wait_for("connect inside the namespace", |e| {
        e["data_type"] == "42" && e["dport"].as_str() == Some(&port.to_string())
    });
    assert_eq!(field(&ev, "res"), "0");
    assert_eq!(field(&ev, "dip"), "198.51.100.2");
    assert_eq!(field(&ev, "sip"), "198.51.100.2");
    assert_eq!(field(&ev, "local_ip"), "198.51.100.2");
    assert_eq!(
        field(&ev, "net_ns"),
        ns_file.metadata().unwrap().ino().to_string()
    );
    assert_ne!(field(&ev, "net_ns"), ns_inode("/proc/self/ns/net"));
    agent.stop();
}

/// A stand-in for the Docker Engine API: answers container inspection for
/// one id, 404 for others, and counts requests.
fn fake_docker(sock: &Path, id: String) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap() == 0 || l == "\r\n" {
                    break;
                }
            }
            let body = format!(
                r#"{{"Id":"{id}","Name":"/kestrel-web","Config":{{"Image":"nginx:kestrel-test","Labels":{{"io.kubernetes.pod.name":"web-pod","io.kubernetes.pod.namespace":"prod"}}}}}}"#
            );
            let answer = if request.starts_with(&format!("GET /containers/{id}/json ")) {
                format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}")
            } else {
                "HTTP/1.0 404 Not Found\r\n\r\n{}".to_string()
            };
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    hits
}

#[test]
fn container_names_come_from_the_runtime_api() {
    let dir = std::env::temp_dir().join(marker("docker-api"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("docker.sock");
    let id = "ab".repeat(32);
    let hits = fake_docker(&sock, id.clone());
    let agent = Agent::start(&["--docker-socket", sock.to_str().unwrap()]);
    let cg = container_cgroup_root().join("docker").join(&id);
    std::fs::create_dir_all(&cg).unwrap();
    let _cg = Cgroup(cg.clone());
    let mark = marker("names");
    // Several execs: the first queues the lookup, later ones carry names.
    let script = format!(
        "echo $$ > {}/cgroup.procs && for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true {mark}; sleep 0.2; done",
        cg.display()
    );
    Command::new("sh").arg("-c").arg(&script).status().unwrap();
    let ev = agent.wait_for("an exec with container names", |e| {
        true_with(&mark)(e) && e["container_name"] == "kestrel-web"
    });
    assert_eq!(field(&ev, "container_id"), id);
    assert_eq!(field(&ev, "image"), "nginx:kestrel-test");
    assert_eq!(field(&ev, "pod_name"), "web-pod");
    assert_eq!(field(&ev, "pod_namespace"), "prod");
    let c = agent.stop();
    // One answer serves every later event of the container.
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(c["runtime_lookups"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dead_runtime_socket_costs_one_try() {
    let agent = Agent::start(&["--docker-socket", "/nonexistent/docker.sock"]);
    let id = "cd".repeat(32);
    let cg = container_cgroup_root().join("docker").join(&id);
    std::fs::create_dir_all(&cg).unwrap();
    let _cg = Cgroup(cg.clone());
    let mark = marker("dead-socket");
    const N: usize = 500;
    let script = format!(
        "echo $$ > {}/cgroup.procs && i=0; while [ $i -lt {N} ]; do /bin/true {mark}; i=$((i+1)); done",
        cg.display()
    );
    Command::new("sh").arg("-c").arg(&script).status().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let count = || {
        agent
            .events()
            .iter()
            .filter(|e| true_with(&mark)(e))
            .count()
    };
    while count() < N && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(count(), N);
    let c = agent.stop();
    assert_eq!(c["kernel_lost"], 0);
    // 500 events of a docker container, but the socket was tried once or a
    // few times (after each backoff), not per event.
    assert!(
        c["runtime_lookups"] >= 1 && c["runtime_lookups"] <= 4,
        "{c:?}"
    );
    assert_eq!(c["runtime_lookups"], c["runtime_lookup_failures"]);
}

mod fake_cri {
    //! A stand-in for containerd's CRI endpoint: ContainerStatus over gRPC
    //! on a unix socket, answering for one container id.

    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use kestrel_enrich::cri::{
        ContainerMetadata, ContainerStatus, ContainerStatusRequest, ContainerStatusResponse,
        ImageSpec, CONTAINER_STATUS,
    };
    use tonic::codegen::http;

    type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

    #[derive(Clone)]
    pub struct FakeCri {
        pub id: String,
        pub hits: Arc<AtomicUsize>,
    }

    struct Status(FakeCri);

    impl tonic::server::UnaryService<ContainerStatusRequest> for Status {
        type Response = ContainerStatusResponse;
        type Future = BoxFuture<Result<tonic::Response<ContainerStatusResponse>, tonic::Status>>;

        fn call(&mut self, req: tonic::Request<ContainerStatusRequest>) -> Self::Future {
            let cri = self.0.clone();
            Box::pin(async move {
                cri.hits.fetch_add(1, Ordering::SeqCst);
                let id = req.into_inner().container_id;
                if id != cri.id {
                    return Err(tonic::Status::not_found("no such container"));
                }
                let labels = [
                    ("io.kubernetes.pod.name", "api-pod"),
                    ("io.kubernetes.pod.namespace", "payments"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                Ok(tonic::Response::new(ContainerStatusResponse {
                    status: Some(ContainerStatus {
                        id,
                        metadata: Some(ContainerMetadata {
                            name: "api".into(),
                            attempt: 0,
                        }),
                        image: Some(ImageSpec {
                            image: "registry.test/api:7".into(),
                        }),
                        image_ref: String::new(),
                        labels,
                    }),
                }))
            })
        }
    }

    impl tower::Service<http::Request<tonic::body::Body>> for FakeCri {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            let cri = self.clone();
            Box::pin(async move {
                if req.uri().path() != CONTAINER_STATUS {
                    let mut r = http::Response::new(tonic::body::Body::empty());
                    r.headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static("12"));
                    r.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    return Ok(r);
                }
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Status(cri), req).await)
            })
        }
    }

    impl tonic::server::NamedService for FakeCri {
        const NAME: &'static str = "runtime.v1.RuntimeService";
    }

    /// Serves on `sock` from a background thread.
    pub fn serve(sock: &std::path::Path, cri: FakeCri) {
        let sock = sock.to_path_buf();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&sock).unwrap();
                ready_tx.send(()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(cri)
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                    .await
                    .unwrap();
            });
        });
        ready_rx.recv().unwrap();
    }
}

#[test]
fn containerd_names_come_from_the_cri_api() {
    let dir = std::env::temp_dir().join(marker("cri-api"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("containerd.sock");
    let id = "ef".repeat(32);
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    fake_cri::serve(
        &sock,
        fake_cri::FakeCri {
            id: id.clone(),
            hits: hits.clone(),
        },
    );
    let agent = Agent::start(&["--containerd-socket", sock.to_str().unwrap()]);
    let uid = "9a8b7c6d-0000-1111-2222-333344445555";
    let cg = container_cgroup_root().join(format!("kubepods/besteffort/pod{uid}/{id}"));
    std::fs::create_dir_all(&cg).unwrap();
    let _cg = Cgroup(cg.clone());
    let mark = marker("cri-names");
    let script = format!(
        "echo $$ > {}/cgroup.procs && for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true {mark}; sleep 0.2; done",
        cg.display()
    );
    Command::new("sh").arg("-c").arg(&script).status().unwrap();
    let ev = agent.wait_for("an exec with CRI names", |e| {
        true_with(&mark)(e) && e["container_name"] == "api"
    });
    assert_eq!(field(&ev, "container_runtime"), "containerd");
    assert_eq!(field(&ev, "container_id"), id);
    assert_eq!(field(&ev, "pod_uid"), uid);
    assert_eq!(field(&ev, "image"), "registry.test/api:7");
    assert_eq!(field(&ev, "pod_name"), "api-pod");
    assert_eq!(field(&ev, "pod_namespace"), "payments");
    let c = agent.stop();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(c["runtime_lookup_failures"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
