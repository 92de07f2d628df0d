//! The chain's counters, stage by stage, and the three views made of
//! them: the `counters` log line (every --stats-interval-secs and
//! `when="final"` at exit), the `/metrics` page and the control server's
//! heartbeat numbers.
//!
//! The log line's field names and their order are a contract: operators
//! grep them and tests parse them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kestrel_enrich::{FileHashCounters, HashSkip};
use kestrel_probes::{KernelCounters, ProbeReport, Probes};
use kestrel_sinks::{FileStats, KafkaStats};

use super::collect::CollectCounters;
use super::detect::DetectCounters;
use super::enrich::EnrichStageCounters;
use super::output::OutputCounters;
use super::sources::SourceCounters;
use crate::fancreate::FanStats;
use crate::logins::LoginCounters;
use kestrel_usb::UsbCounters;

/// The kernel's counters as the views show them.
#[derive(Debug, Default, Clone)]
pub struct KernelPart {
    pub submitted: u64,
    pub lost: u64,
    /// (record kind, submitted, lost), in the log line's order.
    pub kinds: Vec<(&'static str, u64, u64)>,
}

/// The order of the kinds in the log line, older than the table of kinds
/// (which has module loads before file creations); kinds added later
/// follow in the table's order.
const LINE_ORDER: [&str; 7] = ["exec", "connect", "ptrace", "dns", "cred", "file", "module"];

impl KernelPart {
    /// From each kind's (name, submitted, lost), totals summed.
    fn from_kinds(kinds: impl IntoIterator<Item = (&'static str, u64, u64)>) -> Self {
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|k| {
            LINE_ORDER
                .iter()
                .position(|n| *n == k.0)
                .unwrap_or(LINE_ORDER.len())
        });
        KernelPart {
            submitted: kinds.iter().map(|k| k.1).sum(),
            lost: kinds.iter().map(|k| k.2).sum(),
            kinds,
        }
    }
}

/// The kernel's counters, per record kind and in total.
pub fn kernel_part(k: &KernelCounters) -> KernelPart {
    KernelPart::from_kinds(
        k.iter()
            .map(|(kind, c)| (kind.name(), c.submitted, c.lost())),
    )
}

/// Every stage's counters.
pub struct Counters {
    pub collect: Arc<CollectCounters>,
    pub detect: Arc<DetectCounters>,
    pub output: Arc<OutputCounters>,
    pub sources: Arc<SourceCounters>,
    /// The delayed hash of created files, on its own thread.
    pub file_hash: Arc<FileHashCounters>,
    pub logins: Arc<LoginCounters>,
    pub usb: Arc<UsbCounters>,
    /// Lean mode's file creations from fanotify (zero in the default
    /// mode).
    pub fanotify: Arc<FanStats>,
    /// The Kafka output's, when it is the sink at start.
    pub kafka: Option<Arc<KafkaStats>>,
    /// A file output's (size cap), whichever file it is.
    pub file: Arc<FileStats>,
    /// Read from the kernel by the collecting thread (which owns the
    /// probes) about every second.
    kernel: Mutex<KernelPart>,
    /// What became of each program at start: its backend and state.
    probes: Mutex<Vec<ProbeReport>>,
}

/// What heartbeats report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Events written.
    pub emitted: u64,
    /// Events that could not be written.
    pub write_errors: u64,
    /// Records lost in the kernel.
    pub kernel_lost: u64,
    /// Events dropped by the server's filter.
    pub filtered: u64,
    /// Bytes waiting in the output's disk spool (Kafka), 0 without one.
    pub spool_bytes: u64,
    /// Events the output dropped for good (full spool, refused by Kafka).
    pub spool_dropped: u64,
}

fn g(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Counters {
    pub fn new(kafka: Option<Arc<KafkaStats>>, file: Arc<FileStats>) -> Self {
        Counters {
            file,
            collect: Arc::default(),
            detect: Arc::default(),
            output: Arc::default(),
            sources: Arc::default(),
            file_hash: Arc::default(),
            logins: Arc::default(),
            usb: Arc::default(),
            fanotify: Arc::default(),
            kafka,
            kernel: Mutex::default(),
            probes: Mutex::default(),
        }
    }

    /// Keeps what the loader made of each program, for /metrics.
    pub fn set_probes(&self, probes: &[ProbeReport]) {
        *self.probes.lock().unwrap() = probes.to_vec();
    }

    /// Reads the kernel's counters again; a failed read keeps the last.
    pub fn refresh_kernel(&self, probes: &Probes) {
        if let Ok(k) = probes.counters() {
            *self.kernel.lock().unwrap() = kernel_part(&k);
        }
    }

    /// Logs the counters line (and the Kafka output's, if it is the
    /// sink), reading the kernel's counters first. `enrich` comes from
    /// the collecting thread, which owns that stage.
    pub fn log(&self, probes: &Probes, enrich: &EnrichStageCounters, when: &'static str) {
        let kernel = match probes.counters() {
            Ok(k) => kernel_part(&k),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kernel counters");
                kernel_part(&KernelCounters::default())
            }
        };
        *self.kernel.lock().unwrap() = kernel.clone();
        tracing::info!(target: "kestrel::stats", "{}", self.line(&kernel, enrich, when));
        if let Some(k) = &self.kafka {
            log_kafka(k, when);
        }
    }

    /// `counters when="..." received=N ...`, as tracing would print these
    /// fields. Built as text because the kernel's part is a list whose
    /// names are made from the record kinds.
    fn line(&self, kernel: &KernelPart, en: &EnrichStageCounters, when: &str) -> String {
        let (c, d, o, s) = (&self.collect, &self.detect, &self.output, &self.sources);
        let mut fields: Vec<(String, u64)> = vec![
            ("received".into(), g(&c.received)),
            ("emitted".into(), g(&o.emitted)),
            ("decode_errors".into(), g(&c.decode_errors)),
            ("write_errors".into(), g(&o.write_errors)),
            ("output_rotations".into(), g(&self.file.rotations)),
            ("output_capped".into(), g(&self.file.capped)),
            ("userspace_events".into(), g(&s.userspace)),
            ("rootkit_scan_failures".into(), g(&s.rootkit_scan_failures)),
            ("kernel_submitted".into(), kernel.submitted),
            ("kernel_lost".into(), kernel.lost),
        ];
        for &(kind, submitted, lost) in &kernel.kinds {
            fields.push((format!("{kind}_submitted"), submitted));
            fields.push((format!("{kind}_lost"), lost));
            // What later stages count about one kind follows its kernel
            // numbers.
            match kind {
                "dns" => fields.push(("dns_malformed".into(), en.enrich.dns_malformed)),
                "exec" => fields.extend([
                    ("parent_unknown".into(), en.enrich.parent_unknown),
                    ("pgid_unknown".into(), en.enrich.pgid_unknown),
                ]),
                "cred" => fields.push(("cred_allowlisted".into(), g(&d.cred_allowlisted))),
                _ => {}
            }
        }
        fields.extend([
            ("process_gone".into(), en.enrich.process_gone),
            ("md5_too_large".into(), en.enrich.md5_too_large),
            ("md5_unreadable".into(), en.enrich.md5_unreadable),
            ("md5_changed".into(), en.enrich.md5_changed),
            ("md5_budget".into(), en.enrich.md5_budget),
            ("runtime_lookups".into(), en.runtime_lookups),
            ("runtime_lookup_failures".into(), en.runtime_lookup_failures),
            ("runtime_queue_full".into(), en.runtime_queue_full),
            ("max_delay_ms".into(), g(&c.max_delay_ns) / 1_000_000),
        ]);
        let fh = &self.file_hash;
        fields.push(("file_md5_hashed".into(), g(&fh.hashed)));
        fields.push(("file_md5_bytes".into(), g(&fh.bytes)));
        for why in HashSkip::ALL {
            fields.push((
                format!("file_md5_skipped_{}", why.as_str()),
                fh.skipped(why),
            ));
        }
        let l = &self.logins;
        fields.extend([
            ("login_lines_oversize".into(), g(&l.lines_oversize)),
            ("login_lines_partial".into(), g(&l.lines_partial)),
            ("login_truncations".into(), g(&l.truncations)),
            ("login_journal_rejected".into(), g(&l.journal_rejected)),
        ]);
        let u = &self.usb;
        fields.extend([
            ("usb_uevents".into(), g(&u.uevents)),
            ("usb_rejected".into(), g(&u.rejected)),
            ("usb_malformed".into(), g(&u.malformed)),
            ("usb_overruns".into(), g(&u.overruns)),
            ("usb_evicted".into(), g(&u.evicted)),
        ]);
        let e = &d.engine;
        fields.extend([
            ("alerts".into(), g(&e.alerts)),
            ("alerts_suppressed".into(), g(&e.suppressed)),
            ("detect_state_evictions".into(), g(&e.state_evictions)),
            ("rules_loaded".into(), g(&e.rules)),
            ("rules_unsupported".into(), g(&e.rules_unsupported)),
            ("rule_reloads".into(), g(&e.reloads)),
            ("rule_reload_failures".into(), g(&e.reload_failures)),
        ]);
        let mut line = format!("counters when={when:?}");
        for (k, v) in fields {
            let _ = write!(line, " {k}={v}");
        }
        line
    }

    /// The numbers heartbeats report, read live.
    pub fn stats(&self) -> Stats {
        let kafka = self.kafka.as_deref();
        Stats {
            emitted: g(&self.output.emitted),
            write_errors: g(&self.output.write_errors),
            kernel_lost: self.kernel.lock().unwrap().lost,
            filtered: g(&self.detect.filtered),
            spool_bytes: kafka.map_or(0, |k| g(&k.spool.bytes)),
            spool_dropped: kafka.map_or(0, |k| k.dropped()),
        }
    }

    /// The `/metrics` page: pipeline counters, kernel counters per probe
    /// (as of the last refresh), and the Kafka output's when it is the
    /// sink.
    pub fn metrics_page(self: Arc<Self>) -> crate::metrics::Render {
        use crate::metrics::{labelled, metric};
        Arc::new(move |out: &mut String| {
            let c = &self;
            for (name, help, v) in [
                (
                    "kestrel_received_total",
                    "Records read from the kernel ring buffer.",
                    g(&c.collect.received),
                ),
                (
                    "kestrel_emitted_total",
                    "Events written to the output.",
                    g(&c.output.emitted),
                ),
                (
                    "kestrel_write_errors_total",
                    "Events the output failed to take.",
                    g(&c.output.write_errors),
                ),
                (
                    "kestrel_output_rotations_total",
                    "Times the output file was rotated at its size cap.",
                    g(&c.file.rotations),
                ),
                (
                    "kestrel_output_capped_total",
                    "Events dropped because the output file was at its size cap (also in write_errors).",
                    g(&c.file.capped),
                ),
                (
                    "kestrel_decode_errors_total",
                    "Kernel records that did not decode.",
                    g(&c.collect.decode_errors),
                ),
                (
                    "kestrel_userspace_events_total",
                    "Events made in user space (inventory, logins).",
                    g(&c.sources.userspace),
                ),
                (
                    "kestrel_login_lines_oversize_total",
                    "Auth log lines skipped for being over 64 KiB.",
                    g(&c.logins.lines_oversize),
                ),
                (
                    "kestrel_login_lines_partial_total",
                    "Auth log lines skipped because they were not read from their start.",
                    g(&c.logins.lines_partial),
                ),
                (
                    "kestrel_login_truncations_total",
                    "Auth logs found truncated or replaced in place.",
                    g(&c.logins.truncations),
                ),
                (
                    "kestrel_alerts_total",
                    "Alerts raised by the detection rules and sent (data_type 9000).",
                    g(&c.detect.engine.alerts),
                ),
                (
                    "kestrel_alerts_suppressed_total",
                    "Alerts not sent: one of the same rule and key was sent within the suppression window.",
                    g(&c.detect.engine.suppressed),
                ),
                (
                    "kestrel_detect_state_evictions_total",
                    "Detection state entries dropped because the state was full.",
                    g(&c.detect.engine.state_evictions),
                ),
                (
                    "kestrel_rule_reload_failures_total",
                    "Rule reloads refused (a file did not parse; the rules in force stayed).",
                    g(&c.detect.engine.reload_failures),
                ),
                (
                    "kestrel_login_journal_rejected_total",
                    "Journal entries claiming to be sshd's that sshd did not send.",
                    g(&c.logins.journal_rejected),
                ),
                (
                    "kestrel_usb_uevents_total",
                    "Kernel uevents read (every subsystem) by the USB monitor.",
                    g(&c.usb.uevents),
                ),
                (
                    "kestrel_usb_rejected_total",
                    "Messages on the uevent group that the kernel did not send, ignored.",
                    g(&c.usb.rejected),
                ),
                (
                    "kestrel_usb_malformed_total",
                    "Kernel uevents that did not parse or were cut, ignored.",
                    g(&c.usb.malformed),
                ),
                (
                    "kestrel_usb_overruns_total",
                    "Times the uevent socket overflowed (the kernel dropped uevents).",
                    g(&c.usb.overruns),
                ),
                (
                    "kestrel_usb_evicted_total",
                    "USB devices forgotten because the device table was full.",
                    g(&c.usb.evicted),
                ),
                (
                    "kestrel_fanotify_records_total",
                    "Lean mode: file creations (602) read from fanotify.",
                    g(&c.fanotify.made),
                ),
                (
                    "kestrel_fanotify_overflows_total",
                    "Lean mode: times the fanotify queue overflowed (file creations lost, how many unknown).",
                    g(&c.fanotify.overflows),
                ),
                (
                    "kestrel_fanotify_unresolved_total",
                    "Lean mode: fanotify creations whose directory could not be found again (not reported).",
                    g(&c.fanotify.unresolved),
                ),
            ] {
                metric(out, name, "counter", help, v);
            }
            metric(
                out,
                "kestrel_file_md5_hashed_total",
                "counter",
                "Created files hashed (create_file_md5).",
                g(&c.file_hash.hashed),
            );
            metric(
                out,
                "kestrel_file_md5_bytes_total",
                "counter",
                "Bytes read to hash created files.",
                g(&c.file_hash.bytes),
            );
            let skipped: Vec<_> = HashSkip::ALL
                .iter()
                .map(|w| (w.as_str(), c.file_hash.skipped(*w)))
                .collect();
            labelled(
                out,
                "kestrel_file_md5_skipped_total",
                "counter",
                "Created files not hashed, by create_file_md5_skipped.",
                "reason",
                &skipped,
            );
            let kinds = c.kernel.lock().unwrap().kinds.clone();
            let sub: Vec<_> = kinds.iter().map(|(n, s, _)| (*n, *s)).collect();
            let lost: Vec<_> = kinds.iter().map(|(n, _, l)| (*n, *l)).collect();
            labelled(
                out,
                "kestrel_kernel_submitted_total",
                "counter",
                "Records the BPF programs submitted.",
                "probe",
                &sub,
            );
            labelled(
                out,
                "kestrel_kernel_lost_total",
                "counter",
                "Records the BPF programs could not submit (ring buffer full, errors).",
                "probe",
                &lost,
            );
            probe_metrics(out, &c.probes.lock().unwrap());
            if let Some(k) = &c.kafka {
                crate::metrics::kafka(out, k);
            }
        })
    }
}

/// One sample per program: how it is attached and why; and how many
/// programs each backend carries, so that an alert can ask for
/// `kestrel_probe_backend_programs{backend="tracepoint"} > 0`.
fn probe_metrics(out: &mut String, probes: &[ProbeReport]) {
    use crate::metrics::{label_value, labelled};
    let _ = writeln!(
        out,
        "# HELP kestrel_probe_info A BPF program: its hook, its backend (fentry, kprobe, \
         tracepoint, tp_btf, none), its state, and why that backend. Always 1.\n\
         # TYPE kestrel_probe_info gauge"
    );
    for p in probes {
        let _ = writeln!(
            out,
            "kestrel_probe_info{{program=\"{}\",hook=\"{}\",backend=\"{}\",state=\"{}\",reason=\"{}\"}} 1",
            label_value(p.program),
            label_value(p.target),
            label_value(p.backend),
            p.state.as_str(),
            label_value(p.state.reason().unwrap_or(&p.why)),
        );
    }
    let counts = kestrel_probes::attached_by_backend(probes);
    labelled(
        out,
        "kestrel_probe_backend_programs",
        "gauge",
        "BPF programs attached on each backend (tracepoint: syscall tracepoints, which slow every syscall of the host).",
        "backend",
        &counts,
    );
}

fn log_kafka(k: &KafkaStats, when: &'static str) {
    tracing::info!(
        target: "kestrel::stats",
        when,
        produced = g(&k.produced),
        acknowledged = g(&k.acknowledged),
        retried = g(&k.retried),
        replayed = g(&k.replayed),
        spooled = g(&k.spool.spooled),
        dropped = k.dropped(),
        spool_bytes = g(&k.spool.bytes),
        spool_pending = g(&k.spool.pending),
        spool_corrupt = g(&k.spool.corrupt),
        "kafka counters"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_keeps_its_names_and_order() {
        let c = Counters::new(None, Arc::default());
        c.collect.received.store(7, Ordering::Relaxed);
        c.detect.cred_allowlisted.store(2, Ordering::Relaxed);
        // In the table's order, as the kernel gives them.
        let k = KernelPart::from_kinds([
            ("exec", 0, 1),
            ("connect", 0, 0),
            ("ptrace", 0, 0),
            ("dns", 3, 0),
            ("cred", 0, 0),
            ("module", 0, 0),
            ("file", 0, 0),
        ]);
        let mut en = EnrichStageCounters::default();
        en.enrich.dns_malformed = 4;
        let line = c.line(&k, &en, "final");
        assert_eq!(
            line,
            "counters when=\"final\" received=7 emitted=0 decode_errors=0 write_errors=0 \
             output_rotations=0 output_capped=0 userspace_events=0 rootkit_scan_failures=0 kernel_submitted=3 kernel_lost=1 \
             exec_submitted=0 exec_lost=1 parent_unknown=0 pgid_unknown=0 connect_submitted=0 connect_lost=0 \
             ptrace_submitted=0 ptrace_lost=0 dns_submitted=3 dns_lost=0 dns_malformed=4 \
             cred_submitted=0 cred_lost=0 cred_allowlisted=2 file_submitted=0 file_lost=0 \
             module_submitted=0 module_lost=0 process_gone=0 md5_too_large=0 \
             md5_unreadable=0 md5_changed=0 md5_budget=0 runtime_lookups=0 runtime_lookup_failures=0 \
             runtime_queue_full=0 max_delay_ms=0 file_md5_hashed=0 file_md5_bytes=0 \
             file_md5_skipped_queue_full=0 file_md5_skipped_budget=0 \
             file_md5_skipped_too_large=0 file_md5_skipped_stopping=0 \
             file_md5_skipped_missing=0 file_md5_skipped_not_regular=0 \
             file_md5_skipped_unreadable=0 file_md5_skipped_tmpfile=0 \
             file_md5_skipped_no_path=0 login_lines_oversize=0 \
             login_lines_partial=0 login_truncations=0 login_journal_rejected=0 \
             usb_uevents=0 usb_rejected=0 usb_malformed=0 usb_overruns=0 usb_evicted=0 alerts=0 \
             alerts_suppressed=0 detect_state_evictions=0 rules_loaded=0 rules_unsupported=0 rule_reloads=0 \
             rule_reload_failures=0"
        );
    }
}
