//! ssh login monitoring (`data_type` 1001).
//!
//! * [`parse_line`] / [`parse_message`]: sshd messages (OpenSSH 7.x to 10.x,
//!   `sshd`, `sshd-session`, `sshd-auth`) into [`Login`]s; [`to_event`] turns
//!   one into the reference's event.
//! * [`LogFollower`]: tails /var/log/auth.log or /var/log/secure across
//!   rotation and restarts.
//! * [`JournalSource`]: the same messages from the systemd journal.

mod follow;
mod journal;
mod parse;

pub use follow::{FollowerOptions, LogFollower, DEFAULT_MAX_BATCH, DEFAULT_MAX_LINE};
pub use journal::{
    journalctl_args, parse_journal_json, parse_journal_line, sent_by_sshd, JournalEntry,
    JournalOptions, JournalSource,
};
pub use parse::{
    is_sshd_ident, parse_line, parse_message, to_event, Login, Stage, Status, DATA_TYPE_LOGIN,
};

#[cfg(test)]
mod tests;
