//! ssh login monitoring (work in progress).
