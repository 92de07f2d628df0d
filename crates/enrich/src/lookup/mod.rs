//! What user space looks up about an event, each source on its own: /proc,
//! the user database, file hashes, cgroup paths and the container
//! runtimes, network namespaces, module files, the DNS answers each
//! process was given. Every cache is bounded.

pub(crate) mod answers;
pub mod container;
pub mod cri;
pub(crate) mod hash;
pub(crate) mod modinfo;
pub(crate) mod netns;
pub(crate) mod process;
pub(crate) mod procfs;
pub mod runtime;
pub(crate) mod users;
