//! Kernel uevents (`ACTION@DEVPATH\0KEY=VALUE\0...`) and the USB table fed
//! by them: a USB device's firmware chooses its product, manufacturer and
//! serial strings, which reach the message (PRODUCT, INTERFACE, TYPE are
//! its descriptors) and sysfs. The input is up to 32 messages separated
//! by 0xFF bytes (which no kernel message has). A piece that is no uevent
//! is the device's strings (`product\x01manufacturer\x01serial`), written
//! into a fake sysfs tree in /dev/shm for the devices added after it: the
//! table reads them as it reads /sys, never the real one. Every report
//! must become an event whose strings stay within the attribute cap.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

use kestrel_event::Host;
use kestrel_usb::track::SETTLE;
use kestrel_usb::uevent::{self, Action, Uevent};
use kestrel_usb::{to_event, Tracker};

/// The table's cap on an attribute read (512 bytes), each byte escaped at
/// most as `\xNN`.
const MAX_STRING: usize = 4 * 512;

static HOST: LazyLock<Host> = LazyLock::new(|| Host::fixed("fuzz", "192.0.2.1"));

fn sysfs() -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/kestrel-fuzz-uevent-{}",
        std::process::id()
    ))
}

/// The device's strings under its sysfs directory, as the kernel shows
/// them (newline-terminated).
fn write_attrs(root: &Path, devpath: &str, strings: &[u8]) {
    let dir = root.join(devpath.trim_start_matches('/'));
    // Over PATH_MAX or NAME_MAX: the table finds no file, as on a device
    // gone already.
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut parts = strings.splitn(3, |&b| b == 1);
    for name in ["product", "manufacturer", "serial"] {
        let mut v = parts.next().unwrap_or_default().to_vec();
        v.push(b'\n');
        let _ = std::fs::write(dir.join(name), v);
    }
}

fn check(ev: &Uevent, msg: &[u8]) {
    assert!(!ev.devpath.is_empty());
    assert!(msg.len() <= uevent::MAX_MESSAGE);
    assert!(ev.get("SUBSYSTEM").is_some());
    if let Some(p) = ev.sysfs_devpath() {
        // Safe to append to a sysfs root: nothing climbs out of it.
        assert!(p.starts_with("/devices/"), "{p:?}");
        assert!(
            p.split('/')
                .skip(2)
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "{p:?}"
        );
    }
    let _ = ev.text("PRODUCT");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let root = sysfs();
    let _ = std::fs::remove_dir_all(&root);
    let mut tracker = Tracker::new(&root, 4);
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_749_315_805);
    let mut strings: Option<&[u8]> = None;
    let mut reports = Vec::new();
    for (i, piece) in data.split(|&b| b == 0xff).take(32).enumerate() {
        let now = t0 + Duration::from_millis(400 * i as u64);
        match uevent::parse(piece) {
            Ok(ev) => {
                check(&ev, piece);
                if let (Some(s), Action::Add, Some(p)) = (strings, &ev.action, ev.sysfs_devpath()) {
                    write_attrs(&root, p, s);
                }
                reports.extend(tracker.on_uevent(&ev, now, wall));
            }
            Err(_) => strings = Some(piece),
        }
        reports.extend(tracker.due(now));
        assert!(tracker.len() <= 4);
    }
    reports.extend(tracker.due(t0 + Duration::from_secs(60) + SETTLE));
    assert!(tracker.next_due().is_none());
    for r in &reports {
        let e = to_event(r, &HOST);
        for f in ["product_info", "manufacturer", "serial"] {
            let v = e.get(f).unwrap_or_default();
            assert!(v.len() <= MAX_STRING, "{f}: {} bytes", v.len());
        }
        assert!(r.device.devpath.starts_with("/devices/"));
        let mut line = Vec::new();
        e.write_json_line(&mut line);
    }
    let _ = std::fs::remove_dir_all(&root);
});
