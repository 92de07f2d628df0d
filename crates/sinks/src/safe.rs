//! Opening the agent's own files (event files, the raw record file, the
//! state directory) so that no other user can redirect them.
//!
//! The agent runs as root and writes text other users influence (command
//! lines). A symlink or a pre-created file in a directory such as /tmp
//! (`fs.protected_symlinks` may be 0) would make it append to, or truncate,
//! any file on the host. So the path is walked one component at a time
//! from `/` with `openat`, holding each directory open:
//! - every directory and every symlink on the way must be owned by the
//!   agent's user (root): a link or directory another user made is refused,
//!   whatever it points to; root's own links (`/var/run` → `/run`) are
//!   followed;
//! - the file is opened relative to its directory with `O_NOFOLLOW`, and an
//!   existing file must be a regular file owned by the agent's user, with
//!   one link (a hard link another user made to a root file has two) and
//!   not writable by group or others (others may have written into it);
//! - what is reused is `fchmod`ed down to the mode a new file gets.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one walk before giving up (as the kernel's 40).
const MAX_LINKS: usize = 40;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
}

fn refused(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn fstatat(dir: RawFd, name: &CString, flags: i32) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-buffer; name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn openat(dir: RawFd, name: &CString, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the fd returned is ours.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kind(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

/// A directory reached by [`open_dir`], held open: files are opened and
/// renamed relative to it, so that the path cannot be switched under them.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The path made absolute (relative to the working directory), checked for
/// components a walk cannot take.
fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// Walks to the directory `path` as the module describes; with
/// `create = Some(mode)`, missing directories are made with `mode`.
pub fn open_dir(path: &Path, create: Option<u32>) -> io::Result<Dir> {
    let path = absolute(path)?;
    let me = euid();
    let root = || openat(libc::AT_FDCWD, &CString::new("/").unwrap(), libc::O_PATH, 0);
    let mut fd = root()?;
    let mut queue: VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    // What has been walked, for messages.
    let mut walked = PathBuf::from("/");
    while let Some(name) = queue.pop_front() {
        let c = cstr(&name)?;
        let st = match fstatat(fd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                // SAFETY: c is NUL-terminated.
                if unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), create.unwrap()) } < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot create {}: {e}", walked.join(&name).display()),
                        ));
                    }
                }
                queue.push_front(name);
                continue;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", walked.join(&name).display()),
                ))
            }
            Ok(st) => st,
        };
        let here = walked.join(&name);
        if kind(st.st_mode) == libc::S_IFLNK {
            // The link itself, so that what is checked is what is read.
            let link = openat(fd.as_raw_fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            let lst = fstat(link.as_raw_fd())?;
            if lst.st_uid != me {
                return Err(refused(format!(
                    "{} is a symlink owned by uid {}: refused (only links owned by uid {me} are followed)",
                    here.display(),
                    lst.st_uid
                )));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(refused(format!("{}: too many symlinks", path.display())));
            }
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            let empty = CString::new("").unwrap();
            // SAFETY: buf is PATH_MAX bytes long; an empty name reads the
            // link the O_PATH descriptor is on.
            let n = unsafe {
                libc::readlinkat(
                    link.as_raw_fd(),
                    empty.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(n as usize);
            let target = PathBuf::from(OsStr::from_bytes(&buf));
            if target.is_absolute() {
                fd = root()?;
                walked = PathBuf::from("/");
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => queue.push_front(n.to_os_string()),
                    Component::ParentDir => queue.push_front("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        if kind(st.st_mode) != libc::S_IFDIR {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                here.display()
            )));
        }
        let next = openat(
            fd.as_raw_fd(),
            &c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", here.display())))?;
        let dst = fstat(next.as_raw_fd())?;
        if dst.st_uid != me {
            return Err(refused(format!(
                "{} is owned by uid {}: refused (every directory on the way must be owned by uid {me})",
                here.display(),
                dst.st_uid
            )));
        }
        fd = next;
        walked = if name == ".." {
            walked.parent().unwrap_or(Path::new("/")).to_path_buf()
        } else {
            here
        };
    }
    Ok(Dir { fd, path })
}

/// How [`open_file`] opens.
#[derive(Debug, Clone, Copy)]
pub struct FileMode {
    /// Mode of a new file; a reused one is `fchmod`ed down to it.
    pub mode: u32,
    /// Empty the file (the raw record file); otherwise append.
    pub truncate: bool,
}

impl Dir {
    /// The directory's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating if needed) the file `name` in this directory for
    /// writing, as the module describes.
    pub fn open_file(&self, name: &OsStr, how: FileMode) -> io::Result<File> {
        let shown = self.path.join(name);
        let c = cstr(name)?;
        let me = euid();
        // Not opened at all unless it is a regular file: opening a FIFO
        // would block, a device may act on open.
        match fstatat(self.fd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(st.st_mode) == libc::S_IFLNK => {
                return Err(refused(format!(
                    "{} is a symlink: refused (the agent does not write through links)",
                    shown.display()
                )))
            }
            Ok(st) if kind(st.st_mode) != libc::S_IFREG => {
                return Err(refused(format!(
                    "{} is not a regular file: refused",
                    shown.display()
                )))
            }
            _ => {}
        }
        let fd = openat(
            self.fd.as_raw_fd(),
            &c,
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            how.mode,
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refused(format!(
                    "{} is a symlink: refused (the agent does not write through links)",
                    shown.display()
                ))
            } else {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", shown.display()))
            }
        })?;
        let st = fstat(fd.as_raw_fd())?;
        let mode = st.st_mode & 0o7777;
        if kind(st.st_mode) != libc::S_IFREG {
            return Err(refused(format!(
                "{} is not a regular file: refused",
                shown.display()
            )));
        }
        if st.st_uid != me {
            return Err(refused(format!(
                "{} is owned by uid {}, not {me}: refused (delete it, or chown it to root)",
                shown.display(),
                st.st_uid
            )));
        }
        if st.st_nlink != 1 {
            return Err(refused(format!(
                "{} has {} hard links: refused (it may be another file under a second name)",
                shown.display(),
                st.st_nlink
            )));
        }
        if mode & 0o022 != 0 {
            return Err(refused(format!(
                "{} is writable by group or others (mode {mode:04o}): refused, since anyone \
                 may have written into it (delete it, or chmod go-w it)",
                shown.display()
            )));
        }
        let want = mode & how.mode;
        // SAFETY: fd is an open descriptor of ours.
        if want != mode && unsafe { libc::fchmod(fd.as_raw_fd(), want) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if how.truncate {
            // SAFETY: as above.
            if unsafe { libc::ftruncate(fd.as_raw_fd(), 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: as above; regular files ignore O_NONBLOCK but a clean
        // descriptor is handed on.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` within this directory (neither followed if a
    /// link: a rename moves the name).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (f, t) = (cstr(from)?, cstr(to)?);
        // SAFETY: both names are NUL-terminated, the fd is ours.
        let r = unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                f.as_ptr(),
                self.fd.as_raw_fd(),
                t.as_ptr(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets the directory's own mode (reopened for it: a walk holds
    /// `O_PATH` descriptors, which fchmod does not take).
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        let d = openat(
            self.fd.as_raw_fd(),
            &CString::new(".").unwrap(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        // SAFETY: d is an open descriptor of ours.
        if unsafe { libc::fchmod(d.as_raw_fd(), mode) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes `mode`'s bits away from every regular file directly in the
    /// directory (links are not followed): files an older agent created
    /// with a wider mode.
    pub fn narrow_files(&self, mode: u32) -> io::Result<()> {
        for ent in std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))? {
            let name = ent?.file_name();
            let c = cstr(&name)?;
            let Ok(st) = fstatat(self.fd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if kind(st.st_mode) != libc::S_IFREG || st.st_mode & 0o7777 & !mode == 0 {
                continue;
            }
            let f = openat(
                self.fd.as_raw_fd(),
                &c,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                0,
            )?;
            let st = fstat(f.as_raw_fd())?;
            if kind(st.st_mode) == libc::S_IFREG {
                // SAFETY: f is an open descriptor of ours.
                if unsafe { libc::fchmod(f.as_raw_fd(), st.st_mode & 0o7777 & mode) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Opens `path` for writing through [`open_dir`] and [`Dir::open_file`];
/// returns the directory too, for later renames.
pub fn open_file(path: &Path, how: FileMode) -> io::Result<(Dir, File)> {
    let path = absolute(path)?;
    // The one device a host means as an output (benchmarks: no output
    // cost); 0666 by nature, and nothing can be planted in its place
    // without root.
    if path == Path::new("/dev/null") {
        let f = std::fs::OpenOptions::new().append(true).open(&path)?;
        return Ok((open_dir(Path::new("/dev"), None)?, f));
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        ));
    };
    let dir = open_dir(parent, None)?;
    let f = dir.open_file(name, how)?;
    Ok((dir, f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kestrel-safe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const EVENTS: FileMode = FileMode {
        mode: 0o640,
        truncate: false,
    };

    #[test]
    fn creates_and_narrows() {
        let d = scratch("mode");
        let p = d.join("a");
        open_file(&p, EVENTS).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o640 & 0o777);
        open_file(Path::new("/dev/null"), EVENTS).unwrap();
        let e = open_file(Path::new("/dev/zero"), EVENTS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_file(&p, EVENTS).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = open_file(&p, EVENTS).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn links_are_refused_or_followed() {
        let d = scratch("links");
        std::fs::write(d.join("target"), "x").unwrap();
        symlink(d.join("target"), d.join("link")).unwrap();
        let e = open_file(&d.join("link"), EVENTS).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        std::fs::hard_link(d.join("target"), d.join("hard")).unwrap();
        let e = open_file(&d.join("hard"), EVENTS).unwrap_err().to_string();
        assert!(e.contains("hard links"), "{e}");
        // A directory link of our own (root's) is followed.
        std::fs::create_dir(d.join("real")).unwrap();
        symlink("real", d.join("dirlink")).unwrap();
        open_file(&d.join("dirlink/x"), EVENTS).unwrap();
        assert!(d.join("real/x").is_file());
        open_file(&d.join("real/../real/./y"), EVENTS).unwrap();
        assert!(d.join("real/y").is_file());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
