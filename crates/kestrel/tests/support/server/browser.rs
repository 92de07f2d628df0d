//! Headless Chromium driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3 and 4),
//! so that a test can fill and post a form like a person would, follow the
//! redirects with the browser's own cookie rules, and screenshot each page.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Browser {
    child: Child,
    to: File,
    from: BufReader<File>,
    next: u64,
    session: String,
}

/// A close-on-exec pipe whose ends are at 10 or above, out of the way of
/// the child's 3 and 4.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let high = |fd: RawFd| {
        // SAFETY: duplicating a descriptor we own, then closing the old one.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(h >= 10);
        unsafe { libc::close(fd) };
        h
    };
    (high(fds[0]), high(fds[1]))
}

pub fn chromium() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed (scripts/install-deps --test installs it)")
}

/// Where screenshots go: the test run's artifacts directory.
pub fn artifacts() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Browser {
    /// Starts Chromium with a fresh profile in `profile` and one blank tab.
    pub fn launch(profile: &Path) -> Browser {
        let _ = std::fs::remove_dir_all(profile);
        let (cmd_r, cmd_w) = pipe();
        let (ev_r, ev_w) = pipe();
        let mut c = Command::new(chromium());
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            "--window-size=1600,700",
            "--remote-debugging-pipe",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(cmd_r, 3) < 0 || libc::dup2(ev_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        // SAFETY: the child has its copies; ours of its ends close, ours
        // of our ends become Files.
        let (to, from) = unsafe {
            libc::close(cmd_r);
            libc::close(ev_w);
            (File::from_raw_fd(cmd_w), File::from_raw_fd(ev_r))
        };
        let mut b = Browser {
            child,
            to,
            from: BufReader::new(from),
            next: 0,
            session: String::new(),
        };
        let targets = b.call("Target.getTargets", json!({}), false);
        let target = targets["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .map(|t| t["targetId"].clone())
            .unwrap_or_else(|| {
                b.call("Target.createTarget", json!({"url": "about:blank"}), false)["targetId"]
                    .clone()
            });
        let att = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
            false,
        );
        b.session = att["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}), true);
        b
    }

    fn call(&mut self, method: &str, params: Value, in_page: bool) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if in_page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut buf = Vec::new();
            let n = self
                .from
                .read_until(0, &mut buf)
                .expect("read from chromium");
            assert!(n > 0, "chromium closed its pipe during {method}");
            buf.pop();
            let v: Value = serde_json::from_slice(&buf).expect("DevTools JSON");
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// A browser-wide command (cookies, targets).
    pub fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params, false)
    }

    /// A command to the page (its DevTools session).
    pub fn page_call(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params, true)
    }

    /// Puts a cookie for 127.0.0.1:`port` in the browser, as a forger
    /// with the browser's profile could.
    pub fn set_cookie(&mut self, name: &str, value: &str, port: u16) {
        self.browser_call(
            "Storage.setCookies",
            json!({"cookies": [{"name": name, "value": value,
                "url": format!("https://127.0.0.1:{port}/"),
                "secure": true, "httpOnly": true, "sameSite": "Strict"}]}),
        );
    }

    /// Runs `js`, a promise, in the page; what it resolves to.
    pub fn eval_async(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            true,
        );
        r["result"]["value"].clone()
    }

    /// Runs `js` in the page; its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true}),
            true,
        );
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is true (a page loaded, a form answered).
    pub fn wait(&mut self, what: &str, js: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.eval(js) == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not after {secs} s; page {}:\n{}",
                    self.eval("location.href"),
                    self.html()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens `url` and waits until it has loaded.
    pub fn open(&mut self, url: &str) {
        self.eval("window.__kestrel_old = true");
        self.call("Page.navigate", json!({"url": url}), true);
        self.wait(
            &format!("load {url}"),
            "window.__kestrel_old === undefined && document.readyState === 'complete'",
            30,
        );
    }

    /// Signs in to the dashboard at `base` through its form, as a person
    /// would: the login page, the token typed in, the form posted.
    pub fn sign_in(&mut self, base: &str, token: &str) {
        self.open(&format!("{base}/"));
        self.wait(
            "the sign-in form",
            "document.querySelector('form#login input[name=token]') !== null",
            10,
        );
        self.eval("window.__kestrel_old = true");
        self.eval(&format!(
            "document.querySelector('form#login input[name=token]').value = {}; \
             document.querySelector('form#login').requestSubmit()",
            json!(token.trim())
        ));
        self.wait(
            "the dashboard after signing in",
            "window.__kestrel_old === undefined && document.readyState === 'complete' \
             && (document.getElementById('agents') !== null || document.getElementById('error') !== null)",
            30,
        );
    }

    /// The page's HTML.
    pub fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG of the page as `name` in the artifacts directory.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}), true);
        let png = base64(r["data"].as_str().unwrap());
        assert!(png.len() > 1000, "screenshot {name} is {} bytes", png.len());
        let path = artifacts().join(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (val(c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
