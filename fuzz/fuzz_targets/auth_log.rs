//! Auth log lines (/var/log/auth.log, /var/log/secure, `sshd -E`) carry
//! user names and other text an unauthenticated client chose.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let line = kestrel_event::lossless_string(data);
    if let Some(l) = kestrel_logins::parse_line(&line) {
        let _ = kestrel_logins::to_event(&l, &HOST);
    }
    let _ = kestrel_logins::parse_message("sshd", None, &line);
});

static HOST: std::sync::LazyLock<kestrel_event::Host> =
    std::sync::LazyLock::new(kestrel_event::Host::new);
