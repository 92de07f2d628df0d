//! librdkafka's side: the producer configuration a [`KafkaSpec`] makes,
//! the callbacks that collect delivery reports and connection failures,
//! and the advice that turns those failures into the option to check.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use super::{KafkaSpec, MAX_INFLIGHT};

impl KafkaSpec {
    pub(super) fn client_config(&self, client_id: &str) -> io::Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("compression.type", &self.compression)
            .set("acks", &self.acks)
            .set("enable.idempotence", self.idempotence.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            .set(
                "batch.size",
                self.batch_bytes.min(i32::MAX as u64).to_string(),
            )
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                (MAX_INFLIGHT * 2).to_string(),
            )
            .set("queue.buffering.max.kbytes", "262144")
            .set("reconnect.backoff.max.ms", "2000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        let sasl = self.sasl_mechanism.is_some();
        let proto = match (self.tls, sasl) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", proto);
        for (key, v) in [
            ("ssl.ca.location", &self.tls_ca),
            ("ssl.certificate.location", &self.tls_cert),
            ("ssl.key.location", &self.tls_key),
        ] {
            if let Some(p) = v {
                if !p.is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("kafka: {key} {}: no such file", p.display()),
                    ));
                }
                c.set(key, p.to_string_lossy());
            }
        }
        if let (Some(m), Some(u), Some(pf)) = (
            &self.sasl_mechanism,
            &self.sasl_username,
            &self.sasl_password_file,
        ) {
            let pw = std::fs::read_to_string(pf).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "kafka: cannot read sasl_password_file {}: {e}",
                        pf.display()
                    ),
                )
            })?;
            c.set("sasl.mechanisms", m)
                .set("sasl.username", u)
                .set("sasl.password", pw.trim_end_matches(['\n', '\r']));
        }
        Ok(c)
    }
}

/// Delivery reports, collected by the callback for the sender loop.
pub(super) struct Ctx {
    pub(super) reports: Mutex<Vec<(u64, Result<(), KafkaError>)>>,
    last_error_log: Mutex<Option<Instant>>,
    /// The last failure librdkafka reported on a broker connection, by its
    /// error callback (not the "all brokers down" that follows) or its
    /// "FAIL" log lines (a dropped connection is only logged): what
    /// `check_topic` explains when the brokers cannot be reached.
    pub(super) last_cause: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if fac == "FAIL" {
            *self.last_cause.lock().unwrap() =
                Some((RDKafkaErrorCode::BrokerTransportFailure, msg.to_string()));
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            if code != RDKafkaErrorCode::AllBrokersDown {
                *self.last_cause.lock().unwrap() = Some((code, reason.to_string()));
            }
        }
        // A dead broker repeats this every reconnect: once per 10 s.
        let mut last = self.last_error_log.lock().unwrap();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(error = %error, "kafka: {reason}");
            *last = Some(Instant::now());
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, index: usize) {
        let r = match r {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        self.reports.lock().unwrap().push((index as u64, r));
    }
}

pub(super) fn new_producer(config: &ClientConfig) -> io::Result<BaseProducer<Ctx>> {
    config
        .create_with_context(Ctx {
            reports: Mutex::new(Vec::new()),
            last_error_log: Mutex::new(None),
            last_cause: Mutex::new(None),
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("kafka: {e}")))
}

/// What to do about `reason`, the last error librdkafka reported on a
/// broker connection, when the configuration can cause it (TLS, SASL);
/// `None` for the rest (a broker down, a wrong address), which the
/// metadata error already says.
pub(super) fn advice(spec: &KafkaSpec, code: RDKafkaErrorCode, reason: &str) -> Option<String> {
    let reason = reason.trim();
    if code == RDKafkaErrorCode::Authentication || reason.contains("SASL") {
        return Some(format!(
            "SASL authentication failed ({reason}); check sasl_mechanism (the brokers must offer it), sasl_username and the password in sasl_password_file"
        ));
    }
    // A refused client certificate shows as a transport failure with the
    // TLS alert in the reason.
    if code == RDKafkaErrorCode::SSL || (spec.tls && reason.contains("SSL")) {
        let client = if spec.tls_cert.is_some() {
            "that the brokers accept the client certificate in tls_cert"
        } else {
            "if the brokers require a client certificate, set tls_cert and tls_key"
        };
        return Some(format!(
            "TLS with the brokers failed ({reason}); check that tls_ca holds the CA that signed the brokers' certificates, that those certificates name the host in the URL, and {client}"
        ));
    }
    // Connected, then dropped by the broker (librdkafka names the state
    // the connection was in).
    let dropped = ["in state UP", "in state APIVERSION_QUERY"]
        .iter()
        .any(|s| reason.contains(s));
    if !dropped {
        return None;
    }
    let missing = match (spec.tls, spec.sasl_mechanism.is_some()) {
        (false, false) => "TLS or SASL, set tls=true or sasl_mechanism (with sasl_username and sasl_password_file)",
        (true, false) => "SASL, set sasl_mechanism (with sasl_username and sasl_password_file)",
        (false, true) => "TLS, set tls=true",
        (true, true) => return None,
    };
    Some(format!(
        "the brokers close the connection ({reason}); if they require {missing}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_sasl_failures_say_which_option_to_check() {
        let tls = KafkaSpec::parse("h:1/t?tls=true").unwrap();
        let plain = KafkaSpec::parse("h:1/t").unwrap();
        let a = advice(
            &tls,
            RDKafkaErrorCode::SSL,
            "ssl://h:1/bootstrap: SSL handshake failed: certificate verify failed",
        )
        .unwrap();
        assert!(
            a.contains("certificate verify failed") && a.contains("tls_ca"),
            "{a}"
        );
        // A client certificate refused: a transport failure, a TLS alert.
        let a = advice(
            &tls,
            RDKafkaErrorCode::BrokerTransportFailure,
            "Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required",
        )
        .unwrap();
        assert!(a.contains("set tls_cert and tls_key"), "{a}");
        let a = advice(
            &plain,
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: Authentication failed",
        )
        .unwrap();
        assert!(a.contains("sasl_password_file"), "{a}");
        // The same from a log line, which has no error code.
        let a = advice(
            &plain,
            RDKafkaErrorCode::BrokerTransportFailure,
            "SASL authentication error: SASL SCRAM authentication failed: broker responded with unknown-user (after 68ms in state AUTH_REQ)",
        )
        .unwrap();
        assert!(a.contains("sasl_password_file"), "{a}");
        let a = advice(
            &plain,
            RDKafkaErrorCode::BrokerTransportFailure,
            "h:1/bootstrap: Disconnected (after 2ms in state UP)",
        )
        .unwrap();
        assert!(a.contains("set tls=true or sasl_mechanism"), "{a}");
        let a = advice(
            &plain,
            RDKafkaErrorCode::BrokerTransportFailure,
            "h:1/bootstrap: Send failed: Broken pipe (after 0ms in state UP)",
        )
        .unwrap();
        assert!(a.contains("set tls=true or sasl_mechanism"), "{a}");
        // Only what is not set yet is suggested.
        let a = advice(
            &tls,
            RDKafkaErrorCode::BrokerTransportFailure,
            "h:1/bootstrap: Disconnected (after 2ms in state UP)",
        )
        .unwrap();
        assert!(
            a.contains("if they require SASL, set sasl_mechanism"),
            "{a}"
        );
        // Nothing listening: the metadata error says it already.
        assert_eq!(
            advice(
                &plain,
                RDKafkaErrorCode::BrokerTransportFailure,
                "Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
            ),
            None
        );
    }
}
