//! USB devices (data_type 610) from the kernel's uevents. This host has no
//! USB bus and no modules (no dummy_hcd), so here the agent is shown to
//! listen for real: a kernel uevent it takes (a synthetic `change` the
//! kernel sends for /dev/null), and a USB add forged by a local root
//! process on the kernel's multicast group that it must refuse and count.
//! Real devices are plugged and pulled in the qemu guest
//! (tests/qemu/usb.sh): a USB keyboard hot-plugged through qemu's monitor.

use std::time::{Duration, Instant};

use crate::support::{marker, qemu, Agent};

/// Sends `msg` from a fresh uevent socket to the kernel's group (1), as
/// any process with CAP_NET_ADMIN may.
fn send_to_uevent_group(msg: &[u8]) {
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // address and buffer outlive the calls.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_KOBJECT_UEVENT,
        );
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        assert_eq!(
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
            0
        );
        addr.nl_groups = 1;
        let n = libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            len,
        );
        assert_eq!(
            n,
            msg.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }
}

fn counter(agent: &Agent, name: &str) -> u64 {
    // The live value is not logged between periods: read the last line.
    let stderr = agent.stderr();
    stderr
        .lines()
        .rev()
        .filter(|l| l.contains("counters when="))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_forged_usb_uevent_is_rejected_and_counted() {
    let agent = Agent::start(&["--stats-interval-secs", "1"]);
    assert!(
        agent.stderr().contains("USB monitor listening"),
        "{}",
        agent.stderr()
    );
    let tag = marker("usb");
    let digits: String = tag.chars().filter(|c| c.is_ascii_digit()).take(6).collect();
    let devpath = format!("/devices/pci0000:00/0000:00:1d.0/usb9/9-{digits}");

    // The kernel's own uevent is taken: writing to a device's uevent file
    // makes the kernel announce it (here /dev/null, not USB: counted, not
    // reported).
    std::fs::write(
        "/sys/devices/virtual/mem/null/uevent",
        "change 00000000-0000-0000-0000-000000000000 KESTRELTEST=1",
    )
    .unwrap();
    // A USB keyboard, as the kernel would announce it, from this process.
    let forged = format!(
        "add@{devpath}\0ACTION=add\0DEVPATH={devpath}\0SUBSYSTEM=usb\0MAJOR=189\0MINOR=1\0\
         DEVNAME=bus/usb/009/002\0DEVTYPE=usb_device\0PRODUCT=627/1/0\0TYPE=0/0/0\0\
         BUSNUM=009\0DEVNUM=002\0SEQNUM=4242\0"
    );
    send_to_uevent_group(forged.as_bytes());

    let deadline = Instant::now() + Duration::from_secs(20);
    while counter(&agent, "usb_rejected") == 0 || counter(&agent, "usb_uevents") == 0 {
        assert!(
            Instant::now() < deadline,
            "the agent counted no rejected message and no kernel uevent:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the settling time of a device add, had it been taken.
    std::thread::sleep(Duration::from_secs(2));
    let pid = std::process::id();
    let stderr = agent.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("uevent not sent by the kernel rejected")
                && l.contains(&format!("sender_pid=Some({pid})"))),
        "no log line naming this process as the sender:\n{stderr}"
    );
    let events = agent.events();
    let reported: Vec<_> = events
        .iter()
        .filter(|e| e["data_type"] == "610" && e["devpath"] == devpath.as_str())
        .collect();
    assert!(
        reported.is_empty(),
        "a forged device was reported: {reported:?}"
    );
    let c = agent.stop();
    assert!(c["usb_rejected"] >= 1, "{c:?}");
    assert!(c["usb_uevents"] >= 1, "{c:?}");
}

#[test]
fn the_usb_monitor_can_be_turned_off() {
    let agent = Agent::start(&["--no-usb"]);
    let stderr = agent.stderr();
    assert!(!stderr.contains("USB monitor listening"), "{stderr}");
    agent.stop();
    // And by the config file's key.
    let dir = std::env::temp_dir().join(marker("usb-off"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("agent.toml");
    std::fs::write(&conf, "no_usb = true\n").unwrap();
    let agent = Agent::start(&["--config", conf.to_str().unwrap()]);
    let stderr = agent.stderr();
    assert!(!stderr.contains("USB monitor listening"), "{stderr}");
    agent.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A USB keyboard hot-plugged into the 6.1 guest through qemu's monitor
/// (`device_add usb-kbd`, then `device_del`): the agent in the guest
/// reports its add and its removal with its strings, ids, interface and
/// driver (tests/qemu/usb-guest.sh checks every field).
#[test]
fn usb_devices_in_a_qemu_guest() {
    let run = qemu::run_script("usb.sh", &[], "USB");
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(
        run.ok,
        "guest USB test failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(stdout.contains("USB add-event: ok"), "{stdout}");
    assert!(stdout.contains("USB remove-event: ok"), "{stdout}");
}
