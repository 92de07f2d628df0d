//! USB devices as the kernel announces them, kept by devpath so that a
//! removal (whose uevent carries no strings) still names the device, and
//! turned into data_type 610 events.
//!
//! A device's `add` is held for [`SETTLE`]: its interfaces are announced,
//! and bound to drivers, by uevents that follow it, and what it presents
//! itself as (a keyboard beside a disk) is what an analyst looks for.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use kestrel_event::{Event, Host, When};

use crate::uevent::{Action, Uevent};

/// How long a device's add waits for its interfaces and their drivers.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Devices kept by default; each costs well under 2 KiB.
pub const DEFAULT_CAPACITY: usize = 1024;
/// A configuration has at most 32 interfaces (USB 2.0, 9.6.3).
const MAX_INTERFACES: usize = 32;
/// A string descriptor is at most 126 UTF-16 units: 378 UTF-8 bytes.
const MAX_ATTR: u64 = 512;

/// `data_type` of a USB device event.
pub const DATA_TYPE_USB: &str = "610";

/// Where a device's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Its add uevent and its sysfs attributes, read when it came.
    Uevent,
    /// sysfs, read when the agent started (the device was there already).
    Startup,
    /// Nothing but the removal's own uevent: the device was not known.
    Unknown,
}

impl Identity {
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Uevent => "uevent",
            Identity::Startup => "startup",
            Identity::Unknown => "unknown",
        }
    }
}

/// One interface of a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// The kernel's name: `1-1:1.0`.
    pub name: String,
    /// `CC/SS/PP`, hex: class, subclass, protocol.
    pub class: String,
    /// The driver bound to it, empty while none.
    pub driver: String,
}

/// What is known of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub devpath: String,
    pub vendor_id: String,
    pub product_id: String,
    pub bcd_device: String,
    /// `CC/SS/PP`, hex.
    pub device_class: String,
    pub busnum: String,
    pub devnum: String,
    pub product: String,
    pub manufacturer: String,
    pub serial: String,
    pub interfaces: Vec<Interface>,
    pub identity: Identity,
    pub seqnum: String,
}

/// An event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub add: bool,
    pub device: Device,
    /// When the kernel's uevent was read.
    pub time: SystemTime,
    /// The kernel re-announced the device because root wrote to its
    /// `uevent` file (`SYNTH_UUID`), rather than because it came or went.
    pub synthetic: bool,
}

struct Entry {
    device: Device,
    /// The add not sent yet: (due, time read, synthetic).
    pending: Option<(Instant, SystemTime, bool)>,
    order: u64,
}

/// The table of known devices.
pub struct Tracker {
    sysfs: PathBuf,
    capacity: usize,
    devices: HashMap<String, Entry>,
    next_order: u64,
    evicted: u64,
}

impl Tracker {
    /// A table of at most `capacity` devices whose attributes are read
    /// under `sysfs` (`/sys`).
    pub fn new(sysfs: impl Into<PathBuf>, capacity: usize) -> Self {
        Tracker {
            sysfs: sysfs.into(),
            capacity: capacity.max(1),
            devices: HashMap::new(),
            next_order: 0,
            evicted: 0,
        }
    }

    /// Devices forgotten because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Devices known.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Records the devices present now (`SYSFS/bus/usb/devices`), without
    /// reporting them, so that their removal names them. Returns how many.
    pub fn seed(&mut self) -> usize {
        let Ok(dir) = std::fs::read_dir(self.sysfs.join("bus/usb/devices")) else {
            return 0;
        };
        let devices = self.sysfs.join("devices");
        let mut found = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Interfaces (`1-1:1.0`) are read with their device.
            if name.contains(':') {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(entry.path()) else {
                continue;
            };
            let Ok(rel) = real.strip_prefix(&devices) else {
                continue;
            };
            if !real.join("idVendor").exists() {
                continue;
            }
            found.push(format!("/devices/{}", rel.display()));
        }
        found.sort();
        let mut out = Vec::new();
        for devpath in &found {
            let dir = self.dir(devpath);
            let hex = |a: &str| attr(&dir.join(a));
            let class = format!(
                "{}/{}/{}",
                hex("bDeviceClass"),
                hex("bDeviceSubClass"),
                hex("bDeviceProtocol")
            );
            let device = Device {
                devpath: devpath.clone(),
                vendor_id: hex("idVendor"),
                product_id: hex("idProduct"),
                bcd_device: hex("bcdDevice"),
                device_class: class,
                busnum: attr(&dir.join("busnum")),
                devnum: attr(&dir.join("devnum")),
                product: attr(&dir.join("product")),
                manufacturer: attr(&dir.join("manufacturer")),
                serial: attr(&dir.join("serial")),
                interfaces: read_interfaces(&dir),
                identity: Identity::Startup,
                seqnum: String::new(),
            };
            self.insert(device, None, &mut out);
        }
        found.len()
    }

    /// Takes one uevent of any subsystem; returns what to report now.
    pub fn on_uevent(&mut self, ev: &Uevent, now: Instant, wall: SystemTime) -> Vec<Report> {
        let mut out = Vec::new();
        if ev.get("SUBSYSTEM") != Some(b"usb") {
            return out;
        }
        let Some(devpath) = ev.sysfs_devpath() else {
            return out;
        };
        match ev.get("DEVTYPE") {
            Some(b"usb_device") => match ev.action {
                Action::Add => {
                    let device = self.device_of(ev, devpath, Identity::Uevent);
                    let synthetic = ev.get("SYNTH_UUID").is_some();
                    self.insert(device, Some((now + SETTLE, wall, synthetic)), &mut out);
                }
                Action::Remove => {
                    let synthetic = ev.get("SYNTH_UUID").is_some();
                    let device = match self.devices.remove(devpath) {
                        Some(e) => {
                            flush(e.pending, &e.device, &mut out);
                            e.device
                        }
                        None => self.device_of(ev, devpath, Identity::Unknown),
                    };
                    out.push(Report {
                        add: false,
                        device: Device {
                            seqnum: ev.text("SEQNUM"),
                            ..device
                        },
                        time: wall,
                        synthetic,
                    });
                }
                _ => {}
            },
            Some(b"usb_interface") => {
                let Some((parent, name)) = devpath.rsplit_once('/') else {
                    return out;
                };
                let Some(entry) = self.devices.get_mut(parent) else {
                    return out;
                };
                let ifaces = &mut entry.device.interfaces;
                let at = match ifaces.iter().position(|i| i.name == name) {
                    Some(at) => at,
                    None if ifaces.len() < MAX_INTERFACES && ev.action == Action::Add => {
                        ifaces.push(Interface {
                            name: name.to_string(),
                            ..Interface::default()
                        });
                        ifaces.len() - 1
                    }
                    None => return out,
                };
                if let Some(c) = ev.get("INTERFACE") {
                    ifaces[at].class = decimal_triple_to_hex(c);
                }
                if ev.action == Action::Bind {
                    ifaces[at].driver = ev.text("DRIVER");
                }
            }
            _ => {}
        }
        out
    }

    /// The adds whose settling time is over at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Report> {
        let mut out = Vec::new();
        let mut ready: Vec<(u64, &mut Entry)> = self
            .devices
            .values_mut()
            .filter(|e| e.pending.is_some_and(|(due, _, _)| due <= now))
            .map(|e| (e.order, e))
            .collect();
        ready.sort_by_key(|(o, _)| *o);
        for (_, e) in ready {
            flush(e.pending.take(), &e.device, &mut out);
        }
        out
    }

    /// When the next held add is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.devices
            .values()
            .filter_map(|e| e.pending.map(|(due, _, _)| due))
            .min()
    }

    fn insert(
        &mut self,
        device: Device,
        pending: Option<(Instant, SystemTime, bool)>,
        out: &mut Vec<Report>,
    ) {
        // The same path again (a re-announce, or a remove missed): the old
        // add goes out first, nothing is dropped.
        if let Some(old) = self.devices.remove(&device.devpath) {
            flush(old.pending, &old.device, out);
        }
        if self.devices.len() >= self.capacity {
            if let Some(oldest) = self
                .devices
                .iter()
                .min_by_key(|(_, e)| e.order)
                .map(|(k, _)| k.clone())
            {
                let e = self.devices.remove(&oldest).expect("just found");
                flush(e.pending, &e.device, out);
                self.evicted += 1;
            }
        }
        self.next_order += 1;
        self.devices.insert(
            device.devpath.clone(),
            Entry {
                device,
                pending,
                order: self.next_order,
            },
        );
    }

    fn dir(&self, devpath: &str) -> PathBuf {
        self.sysfs.join(devpath.trim_start_matches('/'))
    }

    fn device_of(&self, ev: &Uevent, devpath: &str, identity: Identity) -> Device {
        // PRODUCT=idVendor/idProduct/bcdDevice in unpadded hex.
        let product = ev.text("PRODUCT");
        let mut ids = product.split('/');
        let mut id = || {
            ids.next()
                .filter(|s| {
                    !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .map(|s| format!("{:0>4}", s.to_ascii_lowercase()))
                .unwrap_or_default()
        };
        let (vendor_id, product_id, bcd_device) = (id(), id(), id());
        let number = |k: &str| {
            ev.get(k)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u32>().ok())
                .map(|n| n.to_string())
                .unwrap_or_default()
        };
        // The strings are in sysfs only; a removed device has none left.
        let dir = self.dir(devpath);
        let read = |a: &str| {
            if identity == Identity::Uevent {
                attr(&dir.join(a))
            } else {
                String::new()
            }
        };
        Device {
            devpath: devpath.to_string(),
            vendor_id,
            product_id,
            bcd_device,
            device_class: ev
                .get("TYPE")
                .map(decimal_triple_to_hex)
                .unwrap_or_default(),
            busnum: number("BUSNUM"),
            devnum: number("DEVNUM"),
            product: read("product"),
            manufacturer: read("manufacturer"),
            serial: read("serial"),
            interfaces: Vec::new(),
            identity,
            seqnum: ev.text("SEQNUM"),
        }
    }
}

fn flush(pending: Option<(Instant, SystemTime, bool)>, device: &Device, out: &mut Vec<Report>) {
    if let Some((_, time, synthetic)) = pending {
        out.push(Report {
            add: true,
            device: device.clone(),
            time,
            synthetic,
        });
    }
}

/// `3/1/1` (the kernel's decimal `INTERFACE=` and `TYPE=`) as `03/01/01`;
/// anything else is kept, escaped.
fn decimal_triple_to_hex(v: &[u8]) -> String {
    let parts: Option<Vec<u8>> = std::str::from_utf8(v).ok().and_then(|s| {
        let p: Vec<_> = s.split('/').map(|n| n.parse::<u8>().ok()).collect();
        (p.len() == 3).then_some(p)?.into_iter().collect()
    });
    match parts {
        Some(p) => format!("{:02x}/{:02x}/{:02x}", p[0], p[1], p[2]),
        None => kestrel_event::lossless_string(v),
    }
}

/// A sysfs attribute, at most [`MAX_ATTR`] bytes, without the newline sysfs
/// ends it with, escaped; empty when unreadable. The device chooses its
/// strings (newlines inside included): they are the attacker's, kept whole.
fn attr(path: &Path) -> String {
    let mut buf = Vec::new();
    let ok = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ATTR).read_to_end(&mut buf))
        .is_ok();
    if !ok {
        return String::new();
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    kestrel_event::lossless_string(&buf)
}

/// The interfaces under a device's sysfs directory, by name.
fn read_interfaces(dir: &Path) -> Vec<Interface> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Interface> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(':'))
        .filter(|e| e.path().join("bInterfaceClass").exists())
        .take(MAX_INTERFACES)
        .map(|e| {
            let p = e.path();
            let driver = std::fs::read_link(p.join("driver"))
                .ok()
                .and_then(|l| {
                    l.file_name()
                        .map(|n| kestrel_event::lossless_string(n.as_encoded_bytes()))
                })
                .unwrap_or_default();
            Interface {
                name: e.file_name().to_string_lossy().into_owned(),
                class: format!(
                    "{}/{}/{}",
                    attr(&p.join("bInterfaceClass")),
                    attr(&p.join("bInterfaceSubClass")),
                    attr(&p.join("bInterfaceProtocol"))
                ),
                driver,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The 610 event: Elkeid's four fields first, Kestrel's beside them, then
/// the host's.
pub fn to_event(r: &Report, host: &Host) -> Event {
    let d = &r.device;
    let mut e = Event::with_capacity(24);
    e.push("data_type", DATA_TYPE_USB);
    e.push("product_info", d.product.as_str());
    e.push("manufacturer", d.manufacturer.as_str());
    e.push("serial", d.serial.as_str());
    // Elkeid's codes: USB_DEVICE_ADD is 1, USB_DEVICE_REMOVE 2.
    e.push("action", if r.add { "1" } else { "2" });
    e.push("action_name", if r.add { "add" } else { "remove" });
    e.push("vendor_id", d.vendor_id.as_str());
    e.push("product_id", d.product_id.as_str());
    e.push("bcd_device", d.bcd_device.as_str());
    e.push("device_class", d.device_class.as_str());
    e.push("busnum", d.busnum.as_str());
    e.push("devnum", d.devnum.as_str());
    e.push("devpath", d.devpath.as_str());
    e.push("port", d.devpath.rsplit('/').next().unwrap_or_default());
    let join = |f: fn(&Interface) -> &str| -> String {
        d.interfaces.iter().map(f).collect::<Vec<_>>().join(",")
    };
    e.push("interfaces", join(|i| i.class.as_str()));
    let mut drivers: Vec<&str> = Vec::new();
    for i in &d.interfaces {
        if !i.driver.is_empty() && !drivers.contains(&i.driver.as_str()) {
            drivers.push(&i.driver);
        }
    }
    e.push("drivers", drivers.join(","));
    e.push("identity", d.identity.as_str());
    e.push("synthetic", if r.synthetic { "true" } else { "false" });
    e.push("seqnum", d.seqnum.as_str());
    host.stamp(&mut e, When::Wall(r.time));
    e
}
