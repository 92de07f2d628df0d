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
///
/// Every value lives in one string, back to back, and a field is its name
/// and the range of its value there: an event of forty fields is two
/// allocations, not forty-one, which is most of what building one cost.
#[derive(Clone, Default)]
pub struct Event {
    text: String,
    fields: Vec<(&'static str, usize, usize)>,
}

impl Event {
    /// An empty event with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Event {
            // Most values are short numbers and names; long ones (argv,
            // paths) grow it once or twice.
            text: String::with_capacity(n * 24),
            fields: Vec::with_capacity(n),
        }
    }

    /// Appends a field. Names are static: the schema is fixed at compile time.
    pub fn push(&mut self, name: &'static str, value: impl AsRef<str>) {
        let start = self.text.len();
        self.text.push_str(value.as_ref());
        self.fields.push((name, start, self.text.len()));
    }

    /// Appends a field whose value is `value` formatted (a number, an
    /// address, `format_args!`), written in place.
    pub fn push_display(&mut self, name: &'static str, value: impl std::fmt::Display) {
        let start = self.text.len();
        let _ = write!(self.text, "{value}");
        self.fields.push((name, start, self.text.len()));
    }

    /// Appends a field whose value is an integer in decimal, as its
    /// `Display` writes it, without the formatting machinery (most fields
    /// are numbers).
    pub fn push_int(&mut self, name: &'static str, value: impl Int) {
        let start = self.text.len();
        let v = value.wide();
        match u64::try_from(v.unsigned_abs()) {
            Ok(m) => {
                if v < 0 {
                    self.text.push('-');
                }
                let mut digits = [0u8; 20];
                let mut at = digits.len();
                let mut m = m;
                loop {
                    at -= 1;
                    digits[at] = b'0' + (m % 10) as u8;
                    m /= 10;
                    if m == 0 {
                        break;
                    }
                }
                self.text
                    .push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
            }
            Err(_) => {
                let _ = write!(self.text, "{v}");
            }
        }
        self.fields.push((name, start, self.text.len()));
    }

    /// Appends a field whose value is `bytes` as [`lossless_string`] gives it.
    pub fn push_lossless(&mut self, name: &'static str, bytes: &[u8]) {
        let start = self.text.len();
        lossless_into(&mut self.text, bytes);
        self.fields.push((name, start, self.text.len()));
    }

    /// Replaces the value of a field already pushed; false when absent.
    pub fn set(&mut self, name: &str, value: impl AsRef<str>) -> bool {
        let Some(i) = self.fields.iter().position(|(n, _, _)| same_name(n, name)) else {
            return false;
        };
        let (_, start, end) = self.fields[i];
        let value = value.as_ref();
        if end == self.text.len() {
            // The last value written: rewritten in place.
            self.text.truncate(start);
        }
        // Otherwise the old bytes stay unused: set is rare (a file's hash
        // arriving late), and moving every later value would cost more.
        let start = self.text.len();
        self.text.push_str(value);
        self.fields[i].1 = start;
        self.fields[i].2 = self.text.len();
        true
    }

    /// The value of a field, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _, _)| same_name(n, name))
            .map(|&(_, s, e)| &self.text[s..e])
    }

    /// The fields in order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.fields.iter().map(|&(n, s, e)| (n, &self.text[s..e]))
    }

    /// Appends this event as one JSON line (with the trailing newline).
    /// The bytes are those serde_json writes for [`Serialize`] (tested),
    /// without its per-value dispatch.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        out.reserve(self.text.len() + self.fields.len() * 16 + 3);
        out.push(b'{');
        for (i, (k, v)) in self.fields().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
        }
        out.extend_from_slice(b"}\n");
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.fields.len() == other.fields.len() && self.fields().eq(other.fields())
    }
}

impl Eq for Event {}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("fields", &self.fields().collect::<Vec<_>>())
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in self.fields() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The integer types [`Event::push_int`] takes: the primitive ones only,
/// so a `bool` (which converts to an integer) cannot be written as 0 or 1.
pub trait Int: Copy {
    fn wide(self) -> i128;
}

macro_rules! ints {
    ($($t:ty),*) => {$(
        impl Int for $t {
            fn wide(self) -> i128 {
                self as i128
            }
        }
    )*};
}
ints!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// Whether two field names are equal: the lengths and the first and last
/// bytes tell most names apart without a call to memcmp, which rules'
/// lookups (a scan of the event's forty fields per test) spent most of
/// their time in.
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    x.len() == y.len() && x.first() == y.first() && x.last() == y.last() && x == y
}

/// Whether any byte of `w` is a control byte, `"` or `\\`: the bytes a JSON
/// string escapes. (The classic word-at-a-time tests, exact as booleans
/// for these constants.)
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))))
        != 0
}

/// `s` as a JSON string, escaped as serde_json escapes it: `"` and `\`,
/// the short forms of \b \t \n \f \r, every other control byte as
/// `\u00xx`, and nothing else (UTF-8 stays as it is).
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping, as in most
        // values.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        i += 1;
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        let i = i - 1;
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Turns raw bytes (argv, paths, environment values) into a string without
/// losing anything: valid UTF-8 is kept as is, every byte of an invalid
/// sequence becomes `\xNN`, and `\` itself becomes `\\`, so a raw 0xff
/// byte (`\xff`) and the text `\xff` (`\\xff`) read differently. JSON
/// needs UTF-8; replacing bytes with U+FFFD would hide exactly what an
/// attacker put there.
pub fn lossless_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    lossless_into(&mut out, bytes);
    out
}

/// [`lossless_string`] appended to `out`.
pub fn lossless_into(out: &mut String, bytes: &[u8]) {
    let mut rest = bytes;
    let push_valid = |out: &mut String, s: &str| {
        if !s.contains('\\') {
            out.push_str(s);
            return;
        }
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
                push_valid(out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // SAFETY: from_utf8 said these bytes are valid UTF-8.
                push_valid(out, unsafe { std::str::from_utf8_unchecked(good) });
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                rest = &bad[n..];
            }
        }
    }
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
    fn json_line_is_what_serde_json_writes() {
        let mut e = Event::with_capacity(2);
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        e.push("all", every_ascii.as_str());
        e.push("empty", "");
        e.push("utf8", "é\u{2028}\u{7f}\"\\x");
        e.push_display("n", 42u32);
        e.push_lossless("raw", b"a\xff\\");
        assert!(e.set("empty", "now set"));
        assert!(e.set("raw", "last"));
        let mut fast = Vec::new();
        e.write_json_line(&mut fast);
        let mut slow = serde_json::to_vec(&e).unwrap();
        slow.push(b'\n');
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap()
        );
        assert_eq!(e.get("empty"), Some("now set"));
        assert_eq!(e.get("raw"), Some("last"));
        assert_eq!(e.get("n"), Some("42"));
        // Every byte that needs escaping, at every offset of a word.
        for b in (0u8..0x80).chain([b'"', b'\\']) {
            for at in 0..18 {
                let mut v = "x".repeat(at);
                v.push(char::from(b));
                v.push_str("yyyyyyyyy");
                let mut one = Event::default();
                one.push("v", v.as_str());
                let mut fast = Vec::new();
                one.write_json_line(&mut fast);
                let mut slow = serde_json::to_vec(&one).unwrap();
                slow.push(b'\n');
                assert_eq!(fast, slow, "byte {b:#x} at {at}");
            }
        }
        let mut ints = Event::default();
        for v in [0i64, 7, -1, 42, i64::MAX, i64::MIN] {
            ints.push_int("i", v);
            assert_eq!(ints.fields().last().unwrap().1, v.to_string());
        }
        ints.push_int("u", u64::MAX);
        assert_eq!(ints.get("u"), Some(u64::MAX.to_string().as_str()));
        let mut same = Event::default();
        for (k, v) in e.fields() {
            same.push(k, v);
        }
        assert_eq!(same, e);
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
