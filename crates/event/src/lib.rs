//! The event Kestrel emits: an ordered list of named string fields, written
//! as one JSON object per line in the reference schema
//! (`shared/reference/event-schema.md`). Every value is a JSON string; field
//! names and `data_type` codes are a contract with downstream consumers.

pub mod host;

use std::fmt::Write as _;

use serde::ser::{Serialize, SerializeMap, Serializer};

pub use host::{Host, When};

/// `data_type` of a process execution.
pub const DATA_TYPE_EXEC: &str = "59";
/// `data_type` of an outbound connect.
pub const DATA_TYPE_CONNECT: &str = "42";
/// `data_type` of a DNS answer.
pub const DATA_TYPE_DNS: &str = "601";
/// `data_type` of a file creation.
pub const DATA_TYPE_FILE: &str = "602";
/// `data_type` of a kernel module load.
pub const DATA_TYPE_MODULE: &str = "603";
/// `data_type` of a credential change to root.
pub const DATA_TYPE_CRED: &str = "604";
/// `data_type` of a ptrace request ("process injection").
pub const DATA_TYPE_PTRACE: &str = "101";

/// One output event. Fields keep the order they were pushed in, which
/// follows the reference samples so the output reads like them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    fields: Vec<(&'static str, String)>,
}

impl Event {
    /// An empty event with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Event {
            fields: Vec::with_capacity(n),
        }
    }

    /// Appends a field. Names are static: the schema is fixed at compile time.
    pub fn push(&mut self, name: &'static str, value: impl Into<String>) {
        self.fields.push((name, value.into()));
    }

    /// Replaces the value of a field already pushed; false when absent.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> bool {
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                *v = value.into();
                true
            }
            None => false,
        }
    }

    /// The value of a field, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The fields in order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.fields.iter().map(|(n, v)| (*n, v.as_str()))
    }

    /// Appends this event as one JSON line (with the trailing newline).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("writing to a Vec cannot fail");
        out.push(b'\n');
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Turns raw bytes (argv, paths, environment values) into a string without
/// losing anything: valid UTF-8 is kept as is, every byte of an invalid
/// sequence becomes `\xNN`, and `\` itself becomes `\\`, so a raw 0xff
/// byte (`\xff`) and the text `\xff` (`\\xff`) read differently. JSON
/// needs UTF-8; replacing bytes with U+FFFD would hide exactly what an
/// attacker put there.
pub fn lossless_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    let push_valid = |out: &mut String, s: &str| {
        let mut parts = s.split('\\');
        if let Some(first) = parts.next() {
            out.push_str(first);
        }
        for p in parts {
            out.push_str("\\\\");
            out.push_str(p);
        }
    };
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_valid(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // SAFETY: from_utf8 said these bytes are valid UTF-8.
                push_valid(&mut out, unsafe { std::str::from_utf8_unchecked(good) });
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_order_and_strings() {
        let mut e = Event::default();
        e.push("uid", "0");
        e.push("data_type", DATA_TYPE_EXEC);
        e.push("argv", "sh -c \"x\"");
        let mut out = Vec::new();
        e.write_json_line(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"uid\":\"0\",\"data_type\":\"59\",\"argv\":\"sh -c \\\"x\\\"\"}\n"
        );
        assert_eq!(e.get("data_type"), Some("59"));
    }

    #[test]
    fn lossless_escapes_invalid_bytes() {
        assert_eq!(lossless_string(b"abc"), "abc");
        assert_eq!(lossless_string("é".as_bytes()), "é");
        assert_eq!(lossless_string(b"a\xffb"), "a\\xffb");
        assert_eq!(lossless_string(b"\xe2\x82"), "\\xe2\\x82");
        assert_eq!(lossless_string(b""), "");
    }

    #[test]
    fn lossless_tells_a_raw_byte_from_its_escape_text() {
        assert_eq!(lossless_string(b"\xff"), "\\xff");
        assert_eq!(lossless_string(b"\\xff"), "\\\\xff");
        assert_eq!(lossless_string(b"a\\b\xff\\"), "a\\\\b\\xff\\\\");
    }
}
