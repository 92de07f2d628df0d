//! data_type 86: as 82 (rename.rs), with `link_type` saying which call
//! made it: "hardlink" (link, linkat) or "symlink" (symlink, symlinkat,
//! whose old_name is the link's target text as given).

use kestrel_decode::{Kind, PathPair};
use kestrel_event::{Event, Host};

use super::rename::pair;
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(r: &PathPair, lk: &mut Lookups, host: &Host) -> Event {
    render(r, &lk.context(&r.task, None), host)
}

pub(crate) fn render(r: &PathPair, cx: &Context, host: &Host) -> Event {
    let lt = if r.old.literal { "symlink" } else { "hardlink" };
    pair(r, cx, host, Kind::Link.spec().data_types[0], Some(lt))
}
