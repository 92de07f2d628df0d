//! The kernel's uevent message: `ACTION@DEVPATH\0KEY=VALUE\0...`, as
//! `kobject_uevent_env` builds it (lib/kobject_uevent.c). Parsed with
//! bounds: the kernel's own buffer is 2 KiB of variables (at most 64) after
//! the header, so anything larger, or shaped otherwise, is refused.

use thiserror::Error;

/// The largest message read: the kernel's header (action, `@`, devpath)
/// plus its 2 KiB variable buffer fits well below this.
pub const MAX_MESSAGE: usize = 8192;
/// The kernel sends at most 64 variables (`UEVENT_NUM_ENVP`).
pub const MAX_VARS: usize = 64;

/// Why a message is not a uevent.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("message of {0} bytes is over {MAX_MESSAGE}")]
    TooLong(usize),
    #[error("a udev daemon's message (libudev header), not the kernel's")]
    Libudev,
    #[error("not NUL-terminated: cut")]
    Unterminated,
    #[error("no ACTION@DEVPATH header")]
    NoHeader,
    #[error("variable without '=': {0:?}")]
    BadVariable(String),
    #[error("over {MAX_VARS} variables")]
    TooManyVariables,
    #[error("{0} in the header and in the variables differ")]
    Mismatch(&'static str),
    #[error("no SUBSYSTEM variable")]
    NoSubsystem,
}

/// What happened to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    Bind,
    Unbind,
    /// change, move, online, offline and anything newer kernels add.
    Other(String),
}

impl Action {
    fn from_bytes(b: &[u8]) -> Action {
        match b {
            b"add" => Action::Add,
            b"remove" => Action::Remove,
            b"bind" => Action::Bind,
            b"unbind" => Action::Unbind,
            other => Action::Other(kestrel_event::lossless_string(other)),
        }
    }
}

/// One parsed uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: Action,
    /// The device's path under /sys, as the kernel gives it
    /// (`/devices/pci0000:00/.../usb1/1-1`).
    pub devpath: Vec<u8>,
    vars: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Uevent {
    /// The value of a variable, if present.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of a variable as text (escaped, never lossy); empty when
    /// absent.
    pub fn text(&self, key: &str) -> String {
        self.get(key)
            .map(kestrel_event::lossless_string)
            .unwrap_or_default()
    }

    /// The devpath if it is safe to append to a sysfs root: under
    /// `/devices/`, no empty, `.` or `..` component. Else None.
    pub fn sysfs_devpath(&self) -> Option<&str> {
        let p = std::str::from_utf8(&self.devpath).ok()?;
        let rest = p.strip_prefix("/devices/")?;
        rest.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
            .then_some(p)
    }
}

/// Parses one message from the kernel's uevent socket.
pub fn parse(msg: &[u8]) -> Result<Uevent, ParseError> {
    if msg.is_empty() {
        return Err(ParseError::Empty);
    }
    if msg.len() > MAX_MESSAGE {
        return Err(ParseError::TooLong(msg.len()));
    }
    if msg.starts_with(b"libudev\0") {
        return Err(ParseError::Libudev);
    }
    // The kernel ends every field, the last one too, with a NUL.
    let body = msg.strip_suffix(b"\0").ok_or(ParseError::Unterminated)?;
    let mut fields = body.split(|b| *b == 0);
    let header = fields.next().unwrap_or_default();
    let at = header
        .iter()
        .position(|b| *b == b'@')
        .ok_or(ParseError::NoHeader)?;
    let (action, devpath) = (&header[..at], &header[at + 1..]);
    if action.is_empty() || devpath.is_empty() {
        return Err(ParseError::NoHeader);
    }
    let mut vars = Vec::new();
    for f in fields {
        if f.is_empty() {
            continue;
        }
        if vars.len() == MAX_VARS {
            return Err(ParseError::TooManyVariables);
        }
        let eq = f.iter().position(|b| *b == b'=').ok_or_else(|| {
            ParseError::BadVariable(kestrel_event::lossless_string(&f[..f.len().min(64)]))
        })?;
        if eq == 0 {
            return Err(ParseError::BadVariable(kestrel_event::lossless_string(
                &f[..f.len().min(64)],
            )));
        }
        vars.push((f[..eq].to_vec(), f[eq + 1..].to_vec()));
    }
    let ev = Uevent {
        action: Action::from_bytes(action),
        devpath: devpath.to_vec(),
        vars,
    };
    // The kernel repeats both in its variables; a message where they differ
    // was not made by it.
    if ev.get("ACTION").is_some_and(|a| a != action) {
        return Err(ParseError::Mismatch("ACTION"));
    }
    if ev.get("DEVPATH").is_some_and(|d| d != devpath) {
        return Err(ParseError::Mismatch("DEVPATH"));
    }
    if ev.get("SUBSYSTEM").is_none() {
        return Err(ParseError::NoSubsystem);
    }
    Ok(ev)
}
