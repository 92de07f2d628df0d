//! `users::collect_at` on a temporary root tree.

use std::fs;
use std::path::{Path, PathBuf};

use kestrel_inventory::users::{self, PasswordState, User};

/// A fresh directory under the system temp dir, removed on drop.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "kestrel-users-{tag}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const HASH_ALICE: &str =
    "$6$saltsalt$QWERTYsecretHashAliceXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
const HASH_BOB: &str = "$y$j9T$bobsalt$bobSecretHashYYYYYYYYYYYYYYYYYYYYYYYYYY";
const HASH_DAVE: &str = "$5$davesalt$daveSecretHashZZZZZZZZZZZZZZZZZZZZZZZZZZZ";

/// Today, in days since the epoch, for the expiry checks: 2024-01-01.
const TODAY: u64 = 19_723;

fn fixture(tag: &str) -> TempRoot {
    let root = TempRoot::new(tag);
    root.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
         daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         broken:x:1000:1000\n\
         alice:x:1001:1001:Alice A,,,:/home/alice:/bin/bash\n\
         bob:x:1002:1002::/home/bob:/bin/sh\n\
         carol:x:1003:1003::/home/carol:/bin/bash\n\
         dave:x:1004:1004::/home/dave:/bin/bash\n\
         erin:x:1005:1005::/home/erin:/bin/bash\n\
         frank:x:1006:1006::/home/frank:/bin/bash\n\
         nouid:x:abc:1:x:/:/bin/sh\n",
    );
    root.write(
        "etc/group",
        "root:x:0:\n\
         daemon:x:1:\n\
         sudo:x:27:alice\n\
         admins:x:500:dave,frank\n\
         alice:x:1001:\n\
         bob:x:1002:\n\
         carol:x:1003:\n\
         dave:x:1004:\n\
         erin:x:1005:\n",
    );
    root.write(
        "etc/shadow",
        &format!(
            "root:*:19000:0:99999:7:::\n\
             daemon:*:19000:0:99999:7:::\n\
             alice:{HASH_ALICE}:19700:0:99999:7:::\n\
             bob:!{HASH_BOB}:19700:0:99999:7:::\n\
             carol::19700:0:99999:7:::\n\
             dave:{HASH_DAVE}:19000:0:90:7:::\n\
             frank:{HASH_DAVE}:19700:0:99999:7::19000:\n\
             garbage-line-without-colons\n"
        ),
    );
    root.write(
        "etc/sudoers",
        "# comment\n\
         Defaults env_reset\n\
         User_Alias OPS = erin, %admins\n\
         root ALL=(ALL:ALL) ALL\n\
         OPS ALL=(ALL) NOPASSWD: ALL # trailing comment\n\
         @includedir /etc/sudoers.d\n",
    );
    root.write("etc/sudoers.d/bob", "bob ALL=(ALL) /usr/bin/systemctl\n");
    // Ignored by sudo: names containing a dot.
    root.write("etc/sudoers.d/carol.disabled", "carol ALL=(ALL) ALL\n");
    root
}

fn find<'a>(users: &'a [User], name: &str) -> &'a User {
    users
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("{name} not in {users:?}"))
}

#[test]
fn fixture_accounts() {
    let root = fixture("accounts");
    let (users, warnings) = users::collect_at(&root.0, TODAY);

    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        ["root", "daemon", "alice", "bob", "carol", "dave", "erin", "frank"]
    );

    // The short passwd line and the non-numeric uid, and the bad shadow line.
    let passwd = root.0.join("etc/passwd");
    assert!(
        warnings
            .iter()
            .any(|w| w.file == passwd && w.line_or_record == Some(3)),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.file == passwd && w.line_or_record == Some(10)),
        "{warnings:?}"
    );
    let shadow = root.0.join("etc/shadow");
    assert!(
        warnings
            .iter()
            .any(|w| w.file == shadow && w.line_or_record == Some(8)),
        "{warnings:?}"
    );

    let r = find(&users, "root");
    assert_eq!((r.uid, r.gid), (0, 0));
    assert_eq!(r.password, PasswordState::NoLogin);
    assert!(r.sudo);
    assert_eq!(r.groups, ["root"]);

    let a = find(&users, "alice");
    assert_eq!(a.password, PasswordState::Set);
    assert_eq!(a.gecos, "Alice A,,,");
    assert_eq!(a.home, "/home/alice");
    assert_eq!(a.groups, ["alice", "sudo"]);
    assert!(a.sudo, "member of group sudo");
    assert!(!a.password_expired);
    assert_eq!(a.last_change_days, Some(19_700));

    let b = find(&users, "bob");
    assert_eq!(b.password, PasswordState::Locked);
    assert!(b.sudo, "named in sudoers.d/bob");

    let c = find(&users, "carol");
    assert_eq!(c.password, PasswordState::Empty);
    assert!(!c.sudo, "carol.disabled is ignored as sudo ignores it");

    let d = find(&users, "dave");
    assert!(d.password_expired, "changed on day 19000, max 90 days");
    assert!(d.sudo, "via %admins in User_Alias OPS");
    assert_eq!(d.groups, ["dave", "admins"]);

    let e = find(&users, "erin");
    assert_eq!(e.password, PasswordState::Missing);
    assert!(e.sudo, "direct member of User_Alias OPS");

    let f = find(&users, "frank");
    assert!(f.password_expired, "account expired on day 19000");
    assert_eq!(f.groups, ["1006", "admins"], "no group 1006 defined");

    // No hash (or recognisable part of one) leaks into the output.
    let dump = format!("{users:?} {warnings:?}");
    for h in [HASH_ALICE, HASH_BOB, HASH_DAVE, "saltsalt", "SecretHash"] {
        assert!(!dump.contains(h), "{h} leaked");
    }
    for w in &warnings {
        let shown = w.to_string();
        assert!(!shown.contains("SecretHash"), "{shown}");
    }
}

#[test]
fn include_loop_is_bounded() {
    let root = TempRoot::new("loop");
    root.write(
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\nzed:x:5:5::/:/bin/sh\n",
    );
    root.write("etc/group", "root:x:0:\n");
    root.write("etc/sudoers", "#include /etc/sudoers\nzed ALL=ALL\n");
    let (users, warnings) = users::collect_at(&root.0, TODAY);
    assert!(find(&users, "zed").sudo);
    assert!(!find(&users, "root").sudo);
    assert!(
        warnings.iter().any(|w| w.message.contains("nested")),
        "{warnings:?}"
    );
    // A missing group file is reported, not fatal.
    fs::remove_file(root.0.join("etc/group")).unwrap();
    let (users, warnings) = users::collect_at(&root.0, TODAY);
    assert_eq!(users.len(), 2);
    assert_eq!(find(&users, "zed").groups, ["5"]);
    assert!(
        warnings.iter().any(|w| w.file == root.0.join("etc/group")),
        "{warnings:?}"
    );
}

#[test]
fn missing_passwd_is_a_warning() {
    let root = TempRoot::new("empty");
    let (users, warnings) = users::collect(&root.0);
    assert!(users.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn lastlog_is_read_by_uid() {
    let root = TempRoot::new("lastlog");
    root.write(
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\nu:x:2:2::/:/bin/sh\n",
    );
    root.write("etc/group", "root:x:0:\n");
    let mut log = vec![0u8; 292 * 3];
    log[292 * 2..292 * 2 + 4].copy_from_slice(&1_700_000_000i32.to_ne_bytes());
    fs::create_dir_all(root.0.join("var/log")).unwrap();
    fs::write(root.0.join("var/log/lastlog"), log).unwrap();
    let (users, _) = users::collect_at(&root.0, TODAY);
    assert_eq!(find(&users, "root").last_login, None);
    assert_eq!(find(&users, "u").last_login, Some(1_700_000_000));
}

#[test]
fn real_root() {
    let (users, warnings) = users::collect(Path::new("/"));
    let root = find(&users, "root");
    assert_eq!(root.uid, 0);
    assert_eq!(root.gid, 0);
    eprintln!("{} users, warnings: {warnings:?}", users.len());
}

/// Deterministic pseudo-random garbage built from separators and keywords.
fn garbage(seed: u64, lines: usize) -> String {
    const PARTS: [&str; 16] = [
        ":",
        "::",
        "#",
        "%",
        "=",
        ",",
        " ",
        "\\",
        "\u{e9}",
        "root",
        "0",
        "x",
        "!",
        "*",
        "#include ",
        "User_Alias A",
    ];
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::new();
    for _ in 0..lines {
        for _ in 0..(s % 12) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            out.push_str(PARTS[(s % 16) as usize]);
        }
        out.push('\n');
    }
    out
}

#[test]
fn garbage_never_panics() {
    for seed in 0..200 {
        let root = TempRoot::new("garbage");
        root.write("etc/passwd", &garbage(seed, 30));
        root.write("etc/group", &garbage(seed + 1000, 30));
        root.write("etc/shadow", &garbage(seed + 2000, 30));
        root.write("etc/sudoers", &garbage(seed + 3000, 30));
        root.write("var/log/lastlog", &garbage(seed + 4000, 3));
        let _ = users::collect_at(&root.0, TODAY);
    }
}
