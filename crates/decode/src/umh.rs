//! data_type 607: a user-mode helper's exec, sent by the kernel as the exec
//! record itself under this kind.

use kestrel_abi as abi;

use crate::exec::Exec;
use crate::DecodeError;

/// What `Record::Umh` holds: the exec the helper made (boxed, as an exec
/// record is large).
pub type Decoded = Box<Exec>;

pub(crate) fn decode(buf: &[u8], hdr: abi::kestrel_header) -> Result<Exec, DecodeError> {
    crate::exec::decode(buf, hdr)
}
