//! The Kafka output's TLS and SASL options against a real broker (tansu
//! 0.6.0, built by scripts/kafka-broker), read back by librdkafka's
//! consumer.
//!
//! What tansu 0.6.0 does not do shapes these tests (docs/kafka.md, "How TLS
//! and SASL are tested"):
//!
//! * It does not terminate TLS (`--cert`/`--key` are parsed, never used):
//!   stunnel does, in front of it, with throwaway certificates made here by
//!   the `openssl` command; the broker advertises stunnel's port, so
//!   metadata sends every client back through TLS.
//! * As published, it offers no SASL PLAIN (its rsasl dependency is built
//!   without the mechanism); tests/kafka-broker builds it with PLAIN. And
//!   PLAIN accepts any password: the PLAIN test proves that the agent speaks
//!   SASL PLAIN and that a broker requiring SASL refuses the agent without
//!   it, not that a wrong PLAIN password is refused.
//! * SCRAM-SHA-256 and SCRAM-SHA-512 are checked against the credentials
//!   the broker stores. The test stores them with AlterUserScramCredentials
//!   (librdkafka's admin API, called through its C binding: the rdkafka
//!   crate does not wrap it), on SQLite storage: the in-memory engine takes
//!   the credentials and forgets them.
//!
//! Every case first runs the agent while the broker refuses it (a server
//! certificate not from `tls_ca`, a client certificate the broker does not
//! trust, no SASL, a wrong password): the error must be logged, `broker_up`
//! be 0, nothing be acknowledged and every event wait in the spool. Then
//! the configuration is mended, on the broker's side (the same agent must
//! recover on its own) or the agent's (restarted on the same spool), and
//! every event of every run must be read back.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::kafka::*;
use crate::support::{marker, serial};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Throwaway PEM files: two CAs, a server certificate from each (for
/// 127.0.0.1 and localhost), and a client certificate from the first.
struct Certs {
    ca: PathBuf,
    other_ca: PathBuf,
    /// Signed by `ca`.
    server: (PathBuf, PathBuf),
    /// Signed by `other_ca`.
    other_server: (PathBuf, PathBuf),
    /// Signed by `ca`.
    client: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (scripts/install-deps --test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Made once per test binary.
fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        // Beside the brokers' logs, made again by every run.
        let dir = PathBuf::from("/tmp/kafka-brokers/certs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Our own configuration: the extensions do not depend on the
        // distribution's openssl.cnf.
        std::fs::write(
            dir.join("x509.cnf"),
            "[req]\ndistinguished_name = dn\n[dn]\n\
             [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n\
             [server]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost\n\
             [client]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n",
        )
        .unwrap();
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (name, cn) in [("ca", "Kestrel test CA"), ("other-ca", "Some other CA")] {
            let (k, p) = (format!("{name}.key"), format!("{name}.pem"));
            let subj = format!("/CN={cn}");
            let mut args = vec!["req", "-x509", "-new", "-config", "x509.cnf", "-extensions", "ca"];
            args.extend(key);
            args.extend(["-keyout", &k, "-out", &p, "-days", "2", "-subj", &subj]);
            openssl(&dir, &args);
        }
        for (serial, name, ext, ca) in [
            ("1", "server", "server", "ca"),
            ("2", "other-server", "server", "other-ca"),
            ("3", "client", "client", "ca"),
        ] {
            let (k, csr, p) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subj = format!("/CN=kestrel-test-{name}");
            let mut args = vec!["req", "-new", "-config", "x509.cnf"];
            args.extend(key);
            args.extend(["-keyout", &k, "-out", &csr, "-subj", &subj]);
            openssl(&dir, &args);
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            openssl(
                &dir,
                &[
                    "x509", "-req", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key,
                    "-set_serial", serial, "-days", "2", "-extfile", "x509.cnf",
                    "-extensions", ext, "-out", &p,
                ],
            );
        }
        let pair = |name: &str| (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        Certs {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server: pair("server"),
            other_server: pair("other-server"),
            client: pair("client"),
        }
    })
}

/// stunnel as a TLS server on 127.0.0.1:accept, forwarding in plaintext to
/// the broker on 127.0.0.1:connect.
struct Stunnel {
    child: Child,
}

impl Stunnel {
    /// Shows `server` (certificate, key); with `client_ca`, a client must
    /// show a certificate signed by it.
    fn start(
        accept: u16,
        connect: u16,
        server: &(PathBuf, PathBuf),
        client_ca: Option<&Path>,
    ) -> Stunnel {
        // Beside the brokers' logs.
        let dir = Path::new("/tmp/kafka-brokers");
        let mut conf = format!(
            "foreground = yes\npid =\noutput = {}\n\
             [kafka]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n\
             cert = {}\nkey = {}\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
            dir.join(format!("stunnel-{accept}.log")).display(),
            server.0.display(),
            server.1.display(),
        );
        if let Some(ca) = client_ca {
            // verifyChain implies requireCert: no certificate, no session.
            conf += &format!("CAfile = {}\nverifyChain = yes\n", ca.display());
        }
        let path = dir.join(format!("stunnel-{accept}.conf"));
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("stunnel")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel (scripts/install-deps --test installs stunnel4)");
        wait_listening(accept, "stunnel");
        Stunnel { child }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of the SASL brokers. tansu takes any PLAIN password: the
/// tests' own clients (reader, admin) use PLAIN whatever the agent uses.
fn sasl_client(broker: &str) -> ClientConfig {
    client(
        broker,
        &[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "kestrel-test-admin"),
            ("sasl.password", "anything"),
        ],
    )
}

/// Creates `topic` with the admin API: `tansu topic create` has no SASL.
fn create_topic_with(config: &ClientConfig, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    let res = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .unwrap();
    assert!(
        res.iter().all(|r| r.is_ok()),
        "create topic {topic}: {res:?}"
    );
}

/// Stores SCRAM credentials for `user` on the broker, with
/// AlterUserScramCredentials: librdkafka salts `password` (random salt, 4096
/// iterations) and the broker keeps the derived keys.
fn create_scram_user(config: &ClientConfig, mechanism: &str, user: &str, password: &str) {
    use rdkafka::bindings as rd;
    let mech = match mechanism {
        "SCRAM-SHA-256" => rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256,
        "SCRAM-SHA-512" => rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
        m => panic!("not a SCRAM mechanism: {m}"),
    };
    let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
    let rk = admin.inner().native_ptr();
    let user_c = CString::new(user).unwrap();
    let text = |p: *const std::os::raw::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: librdkafka returns NUL-terminated strings that live
            // as long as the event they came from.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: every pointer is librdkafka's, used while its owner lives,
    // and destroyed once.
    let (event_error, results) = unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let opts = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
        );
        let mut alterations = [rd::rd_kafka_UserScramCredentialUpsertion_new(
            user_c.as_ptr(),
            mech,
            4096,
            password.as_ptr(),
            password.len(),
            std::ptr::null(),
            0,
        )];
        assert!(!alterations[0].is_null());
        rd::rd_kafka_AlterUserScramCredentials(rk, alterations.as_mut_ptr(), 1, opts, queue);
        let ev = rd::rd_kafka_queue_poll(queue, 30_000);
        assert!(!ev.is_null(), "no answer to AlterUserScramCredentials");
        let event_error = match rd::rd_kafka_event_error(ev) {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => None,
            code => Some(format!(
                "{code:?}: {}",
                text(rd::rd_kafka_event_error_string(ev))
            )),
        };
        let mut results = Vec::new();
        let res = rd::rd_kafka_event_AlterUserScramCredentials_result(ev);
        if !res.is_null() {
            let mut n = 0;
            let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(res, &mut n);
            for i in 0..n {
                let r = *responses.add(i);
                let err = rd::rd_kafka_AlterUserScramCredentials_result_response_error(r);
                let code = if err.is_null() {
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                } else {
                    rd::rd_kafka_error_code(err)
                };
                results.push((
                    text(rd::rd_kafka_AlterUserScramCredentials_result_response_user(
                        r,
                    )),
                    code,
                ));
            }
        }
        rd::rd_kafka_event_destroy(ev);
        rd::rd_kafka_UserScramCredentialAlteration_destroy(alterations[0]);
        rd::rd_kafka_AdminOptions_destroy(opts);
        rd::rd_kafka_queue_destroy(queue);
        (event_error, results)
    };
    assert_eq!(event_error, None, "AlterUserScramCredentials failed");
    assert_eq!(
        results,
        [(
            user.to_string(),
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        )],
        "AlterUserScramCredentials for {user}"
    );
}

/// Waits until the agent has had acknowledged every event it found in the
/// spool at start and every event it wrote since. The pending gauge alone
/// is not enough: it moves at the spool's flushes and commits, and reads 0
/// while a batch is being appended after the last commit.
fn wait_drained(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics();
        let g = |k: &str| m[k] as u64;
        if g("kestrel_kafka_spool_pending_events") == 0
            && g("kestrel_kafka_acknowledged_total")
                >= g("kestrel_kafka_spool_recovered_events") + g("kestrel_kafka_spooled_total")
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: not drained: {m:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A case: the agent refused, then delivering once the configuration on
/// one side is mended.
struct Case<'a> {
    name: &'a str,
    topic: &'a str,
    /// The agent's URL.
    url: String,
    /// What the refused agent's log must say, all of it.
    error: &'a [&'a str],
    /// The tests' own client of the broker: to read the topic back.
    reader: ClientConfig,
    /// Whether `reader` gets through while the agent is refused, to check
    /// that the topic is still empty (not behind a TLS front that refuses
    /// the agent: it refuses the reader as well).
    reader_while_refused: bool,
}

/// How a case is mended.
enum Mend<'a> {
    /// On the broker's side: the same agent goes on, with no restart.
    Broker(Box<dyn FnOnce() + 'a>),
    /// The agent restarted with this URL, on the same state directory.
    Agent(String),
}

/// Runs the agent while the broker refuses it: the error must be logged,
/// `broker_up` stay 0, nothing be acknowledged, the topic stay empty and
/// every event wait in the spool. Then mends the configuration: every event
/// of every run must be read back from the topic.
fn refused_then_delivered(c: Case, mend: Mend) {
    let started = Instant::now();
    let state = scratch(c.name);
    let st = state.join("state");
    let mark = marker(c.name);

    let agent = start_agent(&c.url, &st);
    let (id, run1) = identity(&st);
    let load = Load::start(&mark);
    // The pending gauge moves at the spool's flushes: wait on it.
    wait_metric("kestrel_kafka_spool_pending_events", "spooled", 30, |v| {
        v >= 2_000
    });
    load.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = |e: &&str| agent.stderr().contains(e);
    while !(c.error.iter().all(logged) && logged(&"events are kept in the spool")) {
        assert!(
            Instant::now() < deadline,
            "{}: no {:?} in the log:\n{}",
            c.name,
            c.error,
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused_for = started.elapsed();
    assert_eq!(metric("kestrel_kafka_broker_up"), 0);
    assert_eq!(metric("kestrel_kafka_acknowledged_total"), 0);
    assert_eq!(metric("kestrel_kafka_dropped_total"), 0);
    let pending = metric("kestrel_kafka_spool_pending_events");
    assert!(
        pending >= 2_000,
        "{}: {pending} events in the spool",
        c.name
    );
    if c.reader_while_refused {
        assert_eq!(
            high_watermark(&c.reader, c.topic),
            0,
            "{}: the refused agent wrote to the topic",
            c.name
        );
    }

    let mut runs = Vec::new();
    let agent = match mend {
        Mend::Broker(mend) => {
            mend();
            agent
        }
        Mend::Agent(url) => {
            let refused = agent.stop();
            assert_eq!(refused["acknowledged"], 0, "{refused:?}");
            assert_eq!(refused["dropped"], 0, "{refused:?}");
            // Every event of the run is still there.
            assert_eq!(refused["spool_pending"], refused["spooled"], "{refused:?}");
            runs.push((run1, refused["spooled"]));
            let agent = start_agent(&url, &st);
            assert_eq!(identity(&st).1, run1 + 1);
            agent
        }
    };
    // What waited goes first, then new events.
    let before = metric("kestrel_kafka_spooled_total");
    let load = Load::start(&mark);
    wait_metric("kestrel_kafka_spooled_total", "new events", 30, |v| {
        v >= before + 2_000
    });
    load.stop();
    wait_drained(c.name);
    assert_eq!(metric("kestrel_kafka_broker_up"), 1);
    let last = agent.stop();
    assert_eq!(last["spool_pending"], 0, "{last:?}");
    assert_eq!(last["dropped"], 0, "{last:?}");
    runs.push((identity(&st).1, last["spooled"]));

    let reader = Reader::start_with(c.reader.clone(), c.topic);
    reader.catch_up();
    let seen = reader.finish();
    for &(run, n) in &runs {
        assert_complete(&seen.ids, &id, run, n);
    }
    eprintln!(
        "kafka {}: refused, error logged after {:.1}s with {pending} events waiting; runs (run, events) {runs:?} all delivered; {:.1}s in all",
        c.name,
        refused_for.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn tls_refused_with_a_certificate_not_from_tls_ca_then_delivered() {
    let _serial = serial();
    // The broker on 19100, TLS on 19101, where metadata sends clients.
    let broker = Broker::start_with(
        19100,
        BrokerOpts {
            advertised: Some(19101),
            ..BrokerOpts::default()
        },
    );
    let topic = "kestrel-tls";
    broker.create_topic(topic);
    let c = certs();
    // First the broker shows a certificate from another CA than tls_ca.
    let mut tls = Some(Stunnel::start(19101, 19100, &c.other_server, None));
    refused_then_delivered(
        Case {
            name: "tls",
            topic,
            url: format!(
                "kafka://127.0.0.1:19101/{topic}?tls=true&tls_ca={}",
                c.ca.display()
            ),
            error: &[
                "certificate verify failed",
                "check that tls_ca holds the CA that signed the brokers' certificates",
            ],
            reader: client(
                "127.0.0.1:19101",
                &[
                    ("security.protocol", "ssl"),
                    ("ssl.ca.location", c.ca.to_str().unwrap()),
                ],
            ),
            reader_while_refused: false,
        },
        Mend::Broker(Box::new(|| {
            drop(tls.take());
            tls = Some(Stunnel::start(19101, 19100, &c.server, None));
        })),
    );
}

#[test]
fn mutual_tls_refused_until_the_client_certificate_is_trusted() {
    let _serial = serial();
    let broker = Broker::start_with(
        19102,
        BrokerOpts {
            advertised: Some(19103),
            ..BrokerOpts::default()
        },
    );
    let topic = "kestrel-mtls";
    broker.create_topic(topic);
    let c = certs();
    // First the broker trusts client certificates from another CA only.
    let mut tls = Some(Stunnel::start(19103, 19102, &c.server, Some(&c.other_ca)));
    refused_then_delivered(
        Case {
            name: "mtls",
            topic,
            url: format!(
                "kafka://127.0.0.1:19103/{topic}?tls=true&tls_ca={}&tls_cert={}&tls_key={}",
                c.ca.display(),
                c.client.0.display(),
                c.client.1.display()
            ),
            error: &[
                // OpenSSL sends no certificate the server's CA list
                // does not name.
                "alert certificate required",
                "that the brokers accept the client certificate in tls_cert",
            ],
            reader: client(
                "127.0.0.1:19103",
                &[
                    ("security.protocol", "ssl"),
                    ("ssl.ca.location", c.ca.to_str().unwrap()),
                    ("ssl.certificate.location", c.client.0.to_str().unwrap()),
                    ("ssl.key.location", c.client.1.to_str().unwrap()),
                ],
            ),
            reader_while_refused: false,
        },
        Mend::Broker(Box::new(|| {
            drop(tls.take());
            tls = Some(Stunnel::start(19103, 19102, &c.server, Some(&c.ca)));
        })),
    );
}

/// A SASL agent's password file, in `dir`.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let p = dir.join(name);
    // A trailing newline, as an editor leaves it: the agent strips it.
    std::fs::write(&p, format!("{password}\n")).unwrap();
    p
}

#[test]
fn sasl_required_refuses_an_agent_without_then_plain_delivers() {
    let _serial = serial();
    // tansu takes any PLAIN password: this proves that the agent
    // authenticates with PLAIN, and that without SASL it is refused.
    let broker = Broker::start_with(
        19104,
        BrokerOpts {
            authentication: true,
            ..BrokerOpts::default()
        },
    );
    let topic = "kestrel-plain";
    let admin = sasl_client(&broker.addr());
    create_topic_with(&admin, topic);
    let secrets = scratch("plain-secrets");
    let pw = password_file(&secrets, "password", "kestrel-plain-secret");
    refused_then_delivered(
        Case {
            name: "plain",
            topic,
            url: format!("kafka://{}/{topic}", broker.addr()),
            error: &["set tls=true or sasl_mechanism"],
            reader: admin,
            reader_while_refused: true,
        },
        Mend::Agent(format!(
            "kafka://{}/{topic}?sasl_mechanism=PLAIN&sasl_username=kestrel&sasl_password_file={}",
            broker.addr(),
            pw.display()
        )),
    );
    let _ = std::fs::remove_dir_all(&secrets);
}

/// The agent's password is not the one the broker keeps for its user, then
/// the user's password is changed to it.
fn scram(port: u16, mechanism: &str) {
    let name = mechanism.to_ascii_lowercase();
    let db = scratch(&format!("{name}-db"));
    let broker = Broker::start_with(
        port,
        BrokerOpts {
            authentication: true,
            sqlite_dir: Some(db.clone()),
            ..BrokerOpts::default()
        },
    );
    let topic = format!("kestrel-{name}");
    let admin = sasl_client(&broker.addr());
    create_topic_with(&admin, &topic);
    create_scram_user(&admin, mechanism, "kestrel", "the-old-password");
    let secrets = scratch(&format!("{name}-secrets"));
    let pw = password_file(&secrets, "password", "the-new-password");
    refused_then_delivered(
        Case {
            name: &name,
            topic: &topic,
            url: format!(
                "kafka://{}/{topic}?sasl_mechanism={mechanism}&sasl_username=kestrel&sasl_password_file={}",
                broker.addr(),
                pw.display()
            ),
            error: &[
                "SASL authentication failed",
                "the password in sasl_password_file",
            ],
            reader: admin.clone(),
            reader_while_refused: true,
        },
        Mend::Broker(Box::new(|| {
            create_scram_user(&admin, mechanism, "kestrel", "the-new-password")
        })),
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&db);
    let _ = std::fs::remove_dir_all(&secrets);
}

#[test]
fn scram_sha_256_refuses_a_wrong_password_then_delivers() {
    let _serial = serial();
    scram(19105, "SCRAM-SHA-256");
}

#[test]
fn scram_sha_512_refuses_a_wrong_password_then_delivers() {
    let _serial = serial();
    scram(19106, "SCRAM-SHA-512");
}
