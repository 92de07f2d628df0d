//! data_type 606: as 605 (unlink.rs).

use kestrel_decode::{Kind, Removal};
use kestrel_event::{Event, Host};

use super::unlink::removal;
use crate::context::{Context, Lookups};

/// Its context looked up, then its fields.
pub(crate) fn event(r: &Removal, lk: &mut Lookups, host: &Host) -> Event {
    render(r, &lk.context(&r.task, None), host)
}

pub(crate) fn render(r: &Removal, cx: &Context, host: &Host) -> Event {
    removal(r, cx, host, Kind::Rmdir.spec().data_types[0])
}
