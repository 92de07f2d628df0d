//! The parser and the table on synthetic uevents, laid out byte for byte
//! as Linux's `kobject_uevent_env` and `usb_dev_uevent`/`usb_if_uevent`
//! make them, against a fake sysfs tree.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kestrel_event::Host;

use crate::track::{to_event, Identity, Tracker};
use crate::uevent::{parse, Action, ParseError, MAX_MESSAGE};

const DEV: &str = "/devices/pci0000:00/0000:00:04.0/usb1/1-1";

/// A kernel message: header, then the variables, each NUL-terminated.
fn msg(action: &str, devpath: &str, vars: &[&str]) -> Vec<u8> {
    let mut m = format!("{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0").into_bytes();
    for v in vars {
        m.extend_from_slice(v.as_bytes());
        m.push(0);
    }
    m
}

fn device_msg(action: &str, seq: u32) -> Vec<u8> {
    msg(
        action,
        DEV,
        &[
            "SUBSYSTEM=usb",
            "MAJOR=189",
            "MINOR=1",
            "DEVNAME=bus/usb/001/002",
            "DEVTYPE=usb_device",
            "PRODUCT=627/1/0",
            "TYPE=0/0/0",
            "BUSNUM=001",
            "DEVNUM=002",
            &format!("SEQNUM={seq}"),
        ],
    )
}

fn interface_msg(action: &str, seq: u32, driver: Option<&str>) -> Vec<u8> {
    let path = format!("{DEV}/1-1:1.0");
    let drv = driver.map(|d| format!("DRIVER={d}"));
    let mut vars = vec!["SUBSYSTEM=usb", "DEVTYPE=usb_interface"];
    if let Some(d) = &drv {
        vars.push(d);
    }
    let seq = format!("SEQNUM={seq}");
    vars.extend([
        "PRODUCT=627/1/0",
        "TYPE=0/0/0",
        "INTERFACE=3/1/1",
        "MODALIAS=usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip01in00",
        &seq,
    ]);
    msg(action, &path, &vars)
}

/// sysfs attributes of DEV under `root`; the device chose the strings.
fn fake_sysfs(root: &Path, product: &[u8]) {
    let d = root.join(DEV.trim_start_matches('/'));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("product"), product).unwrap();
    std::fs::write(d.join("manufacturer"), "QEMU\n").unwrap();
    std::fs::write(d.join("serial"), "KESTREL-42\n").unwrap();
}

fn json(r: &crate::Report) -> String {
    let host = Host::fixed("vm", "192.0.2.2");
    let mut out = Vec::new();
    to_event(r, &host).write_json_line(&mut out);
    String::from_utf8(out).unwrap()
}

const T0: u64 = 1_795_749_315_805;

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[test]
fn a_keyboard_comes_and_goes() {
    let sys = tempfile::tempdir().unwrap();
    // A hostile product string: JSON metacharacters, a newline inside,
    // a byte that is not UTF-8, a backslash.
    fake_sysfs(sys.path(), b"Key\"board\\ \xff},{\"x\nmore\n");
    let mut t = Tracker::new(sys.path(), 16);
    let now = Instant::now();

    let add = parse(&device_msg("add", 1234)).unwrap();
    assert_eq!(add.action, Action::Add);
    assert!(t.on_uevent(&add, now, at(T0)).is_empty(), "held to settle");
    for (m, dt) in [
        (interface_msg("add", 1235, None), 10),
        (interface_msg("bind", 1236, Some("usbhid")), 20),
    ] {
        let ev = parse(&m).unwrap();
        assert!(t
            .on_uevent(&ev, now + Duration::from_millis(dt), at(T0 + dt))
            .is_empty());
    }
    assert!(t.due(now + Duration::from_millis(999)).is_empty());
    assert_eq!(t.next_due(), Some(now + crate::track::SETTLE));
    let added = t.due(now + crate::track::SETTLE);
    assert_eq!(added.len(), 1);
    assert_eq!(
        json(&added[0]),
        concat!(
            r#"{"data_type":"610","product_info":"Key\"board\\\\ \\xff},{\"x\nmore","manufacturer":"QEMU","#,
            r#""serial":"KESTREL-42","action":"1","action_name":"add","vendor_id":"0627","#,
            r#""product_id":"0001","bcd_device":"0000","device_class":"00/00/00","busnum":"1","#,
            r#""devnum":"2","devpath":"/devices/pci0000:00/0000:00:04.0/usb1/1-1","port":"1-1","#,
            r#""interfaces":"03/01/01","drivers":"usbhid","identity":"uevent","synthetic":"false","#,
            r#""seqnum":"1234","time":"1795749315805","local_ip":"192.0.2.2","hostname":"vm"}"#,
            "\n"
        )
    );
    assert!(t.due(now + Duration::from_secs(5)).is_empty(), "sent once");

    // Gone: sysfs has nothing left, the table still knows it.
    std::fs::remove_dir_all(sys.path().join("devices")).unwrap();
    let unbind = parse(&interface_msg("unbind", 1237, None)).unwrap();
    assert!(t.on_uevent(&unbind, now, at(T0)).is_empty());
    let iremove = parse(&interface_msg("remove", 1238, None)).unwrap();
    assert!(t.on_uevent(&iremove, now, at(T0)).is_empty());
    let remove = parse(&device_msg("remove", 1239)).unwrap();
    let removed = t.on_uevent(&remove, now + Duration::from_secs(9), at(T0 + 9000));
    assert_eq!(removed.len(), 1);
    assert_eq!(
        json(&removed[0]),
        concat!(
            r#"{"data_type":"610","product_info":"Key\"board\\\\ \\xff},{\"x\nmore","manufacturer":"QEMU","#,
            r#""serial":"KESTREL-42","action":"2","action_name":"remove","vendor_id":"0627","#,
            r#""product_id":"0001","bcd_device":"0000","device_class":"00/00/00","busnum":"1","#,
            r#""devnum":"2","devpath":"/devices/pci0000:00/0000:00:04.0/usb1/1-1","port":"1-1","#,
            r#""interfaces":"03/01/01","drivers":"usbhid","identity":"uevent","synthetic":"false","#,
            r#""seqnum":"1239","time":"1795749324805","local_ip":"192.0.2.2","hostname":"vm"}"#,
            "\n"
        )
    );
    assert!(t.is_empty());
}

#[test]
fn a_device_pulled_before_it_settled_is_reported_added_then_removed() {
    let sys = tempfile::tempdir().unwrap();
    fake_sysfs(sys.path(), b"Stick\n");
    let mut t = Tracker::new(sys.path(), 16);
    let now = Instant::now();
    t.on_uevent(&parse(&device_msg("add", 1)).unwrap(), now, at(T0));
    let r = t.on_uevent(&parse(&device_msg("remove", 2)).unwrap(), now, at(T0 + 5));
    assert_eq!(r.len(), 2);
    assert!(r[0].add && !r[1].add);
    assert_eq!(r[0].device.product, "Stick");
    assert_eq!(r[1].device.product, "Stick");
    assert!(t.due(now + Duration::from_secs(5)).is_empty());
}

#[test]
fn an_unknown_device_is_removed_with_what_its_uevent_says() {
    let sys = tempfile::tempdir().unwrap();
    let mut t = Tracker::new(sys.path(), 16);
    let r = t.on_uevent(
        &parse(&device_msg("remove", 7)).unwrap(),
        Instant::now(),
        at(T0),
    );
    assert_eq!(r.len(), 1);
    let d = &r[0].device;
    assert_eq!(d.identity, Identity::Unknown);
    assert_eq!(
        (d.vendor_id.as_str(), d.product_id.as_str()),
        ("0627", "0001")
    );
    assert_eq!((d.product.as_str(), d.serial.as_str()), ("", ""));
}

#[test]
fn devices_present_at_start_are_named_at_their_removal() {
    let sys = tempfile::tempdir().unwrap();
    fake_sysfs(sys.path(), b"Old disk\n");
    let d = sys.path().join(DEV.trim_start_matches('/'));
    for (a, v) in [
        ("idVendor", "0781"),
        ("idProduct", "5567"),
        ("bcdDevice", "0100"),
        ("bDeviceClass", "00"),
        ("bDeviceSubClass", "00"),
        ("bDeviceProtocol", "00"),
        ("busnum", "1"),
        ("devnum", "2"),
    ] {
        std::fs::write(d.join(a), format!("{v}\n")).unwrap();
    }
    let i = d.join("1-1:1.0");
    std::fs::create_dir_all(&i).unwrap();
    for (a, v) in [
        ("bInterfaceClass", "08"),
        ("bInterfaceSubClass", "06"),
        ("bInterfaceProtocol", "50"),
    ] {
        std::fs::write(i.join(a), format!("{v}\n")).unwrap();
    }
    let drv = sys.path().join("bus/usb/drivers/usb-storage");
    std::fs::create_dir_all(&drv).unwrap();
    std::os::unix::fs::symlink(&drv, i.join("driver")).unwrap();
    let list = sys.path().join("bus/usb/devices");
    std::fs::create_dir_all(&list).unwrap();
    std::os::unix::fs::symlink(&d, list.join("1-1")).unwrap();
    std::os::unix::fs::symlink(&i, list.join("1-1:1.0")).unwrap();

    let mut t = Tracker::new(sys.path(), 16);
    assert_eq!(t.seed(), 1);
    let r = t.on_uevent(
        &parse(&device_msg("remove", 9)).unwrap(),
        Instant::now(),
        at(T0),
    );
    assert_eq!(r.len(), 1, "a seeded device is not reported as added");
    let d = &r[0].device;
    assert_eq!(d.identity, Identity::Startup);
    assert_eq!(d.product, "Old disk");
    assert_eq!(d.vendor_id, "0781");
    assert_eq!(d.interfaces.len(), 1);
    assert_eq!(d.interfaces[0].class, "08/06/50");
    assert_eq!(d.interfaces[0].driver, "usb-storage");
}

#[test]
fn the_table_is_bounded_and_loses_no_add() {
    let sys = tempfile::tempdir().unwrap();
    let mut t = Tracker::new(sys.path(), 2);
    let now = Instant::now();
    let mut sent = Vec::new();
    for n in 1..=3 {
        let path = format!("/devices/pci0000:00/0000:00:04.0/usb1/1-{n}");
        let m = msg(
            "add",
            &path,
            &["SUBSYSTEM=usb", "DEVTYPE=usb_device", "PRODUCT=1/2/3"],
        );
        sent.extend(t.on_uevent(&parse(&m).unwrap(), now, at(T0)));
    }
    assert_eq!(t.len(), 2);
    assert_eq!(t.evicted(), 1);
    // The evicted device's add went out at once.
    assert_eq!(sent.len(), 1);
    assert!(sent[0].device.devpath.ends_with("/1-1"));
    assert_eq!(t.due(now + Duration::from_secs(2)).len(), 2);
}

#[test]
fn a_re_announced_device_is_marked_synthetic() {
    let sys = tempfile::tempdir().unwrap();
    fake_sysfs(sys.path(), b"K\n");
    let mut t = Tracker::new(sys.path(), 16);
    let now = Instant::now();
    t.on_uevent(&parse(&device_msg("add", 1)).unwrap(), now, at(T0));
    let mut again = device_msg("add", 2);
    again.extend_from_slice(b"SYNTH_UUID=0\0");
    // The first add, still held, goes out when the second replaces it.
    let r = t.on_uevent(&parse(&again).unwrap(), now, at(T0));
    assert_eq!(r.len(), 1);
    assert!(!r[0].synthetic);
    let r = t.due(now + Duration::from_secs(2));
    assert_eq!(r.len(), 1);
    assert!(r[0].synthetic);
    assert!(json(&r[0]).contains(r#""synthetic":"true""#));
}

#[test]
fn every_cut_of_a_message_is_refused_or_consistent() {
    let full = device_msg("add", 1234);
    for n in 0..full.len() {
        let cut = &full[..n];
        match parse(cut) {
            Ok(ev) => {
                // Only a cut at a field's end parses, and then as the
                // fields before it, never a guess at the rest.
                assert_eq!(full[n - 1], 0, "{n}");
                assert_eq!(ev.get("DEVPATH"), Some(ev.devpath.as_slice()), "{n}");
                assert_eq!(ev.get("SUBSYSTEM"), Some(&b"usb"[..]), "{n}");
            }
            Err(e) => {
                let expected = match n {
                    0 => ParseError::Empty,
                    _ if full[n - 1] != 0 => ParseError::Unterminated,
                    _ => e.clone(),
                };
                assert_eq!(e, expected, "{n}");
            }
        }
    }
    // Cut inside DEVPATH's value (NUL-terminated again): it no longer
    // matches the header.
    let at = full.windows(8).position(|w| w == b"DEVPATH=").unwrap() + 20;
    let mut m = full[..at].to_vec();
    m.push(0);
    assert_eq!(parse(&m), Err(ParseError::Mismatch("DEVPATH")));
    // Cut before SUBSYSTEM.
    let at = full.windows(10).position(|w| w == b"SUBSYSTEM=").unwrap();
    assert_eq!(parse(&full[..at]), Err(ParseError::NoSubsystem));
}

#[test]
fn hostile_messages_are_refused() {
    assert_eq!(
        parse(&vec![b'a'; MAX_MESSAGE + 1]),
        Err(ParseError::TooLong(MAX_MESSAGE + 1))
    );
    assert_eq!(
        parse(b"libudev\0\xfe\xed\xca\xfe rest\0"),
        Err(ParseError::Libudev)
    );
    assert_eq!(parse(b"add\0SUBSYSTEM=usb\0"), Err(ParseError::NoHeader));
    assert_eq!(
        parse(b"@/devices/x\0SUBSYSTEM=usb\0"),
        Err(ParseError::NoHeader)
    );
    // A header that disagrees with the variables is not the kernel's.
    let m = b"add@/devices/a\0ACTION=remove\0DEVPATH=/devices/a\0SUBSYSTEM=usb\0";
    assert_eq!(parse(m), Err(ParseError::Mismatch("ACTION")));
    assert_eq!(
        parse(b"add@/devices/a\0SUBSYSTEM=usb\0NOEQUALS\0"),
        Err(ParseError::BadVariable("NOEQUALS".into()))
    );
    assert_eq!(
        parse(b"add@/devices/a\0SUBSYSTEM=usb\0=x\0"),
        Err(ParseError::BadVariable("=x".into()))
    );
    let mut many = b"add@/devices/a\0SUBSYSTEM=usb\0".to_vec();
    for i in 0..64 {
        many.extend_from_slice(format!("K{i}=v\0").as_bytes());
    }
    assert_eq!(parse(&many), Err(ParseError::TooManyVariables));
}

#[test]
fn paths_out_of_sysfs_are_never_read() {
    let sys = tempfile::tempdir().unwrap();
    // A file the ".." path would reach if it were followed.
    std::fs::write(sys.path().join("product"), "outside\n").unwrap();
    let mut t = Tracker::new(sys.path().join("sys"), 16);
    for path in [
        "/devices/../product/..",
        "/devices/a/../../",
        "/devices//x",
        "/etc/passwd",
        "/devices/./x",
    ] {
        let m = msg("add", path, &["SUBSYSTEM=usb", "DEVTYPE=usb_device"]);
        let ev = parse(&m).unwrap();
        assert_eq!(ev.sysfs_devpath(), None, "{path}");
        assert!(t.on_uevent(&ev, Instant::now(), at(T0)).is_empty());
    }
    assert!(t.is_empty());
    assert!(t.due(Instant::now() + Duration::from_secs(2)).is_empty());
}

#[test]
fn odd_values_are_escaped_not_trusted() {
    let sys = tempfile::tempdir().unwrap();
    let mut t = Tracker::new(sys.path(), 16);
    let m = msg(
        "add",
        DEV,
        &[
            "SUBSYSTEM=usb",
            "DEVTYPE=usb_device",
            "PRODUCT=zzzzz/12345/\u{e9}",
            "TYPE=\u{ff}/1",
            "BUSNUM=-1",
            "SEQNUM=1\"\\",
        ],
    );
    let mut m2 = m.clone();
    m2.extend_from_slice(b"X=\xff\0");
    t.on_uevent(&parse(&m2).unwrap(), Instant::now(), at(T0));
    let r = t.due(Instant::now() + Duration::from_secs(2));
    let d = &r[0].device;
    assert_eq!(
        (
            d.vendor_id.as_str(),
            d.product_id.as_str(),
            d.bcd_device.as_str()
        ),
        ("", "", "")
    );
    assert_eq!(d.device_class, "\u{ff}/1");
    assert_eq!(d.busnum, "");
    assert_eq!(d.seqnum, "1\"\\\\");
    // Not a USB subsystem, not a USB device: nothing.
    let m = msg("add", DEV, &["SUBSYSTEM=block", "DEVTYPE=usb_device"]);
    assert!(t
        .on_uevent(&parse(&m).unwrap(), Instant::now(), at(T0))
        .is_empty());
    let m = msg(
        "add",
        "/devices/pci0000:00/0000:00:04.0/usb1",
        &["SUBSYSTEM=usb", "DEVTYPE=usb_hub"],
    );
    assert!(t
        .on_uevent(&parse(&m).unwrap(), Instant::now(), at(T0))
        .is_empty());
}
