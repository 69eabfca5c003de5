//! What `stash` tells a person on stderr once a stash is made.

use super::StashOutcome;

/// One line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A step line (silenced by `--quiet`).
    Step(String),
    /// A warning (always shown).
    Warn(String),
}

/// The lines saying what the stash of `outcome` did, which took `secs` seconds.
pub fn notes(outcome: &StashOutcome, secs: f64) -> Vec<Note> {
    let mut out = Vec::new();
    if outcome.layers_added == 0 {
        out.push(Note::Step(format!(
            "no change since the last stash of {}:{}: no layer added",
            outcome.name, outcome.tag
        )));
    } else if let Some(l) = &outcome.layer {
        out.push(Note::Step(format!(
            "added layer {} ({} bytes; {} added, {} changed, {} deleted) in {secs:.2}s",
            l.digest, l.size, outcome.added, outcome.changed, outcome.deleted
        )));
    }
    if outcome.sockets_skipped > 0 {
        out.push(Note::Warn(format!(
            "{} sockets left out (they cannot be stashed)",
            outcome.sockets_skipped
        )));
    }
    for dir in &outcome.left_out {
        out.push(Note::Warn(format!(
            "{} is the store, inside the root: left out of the stash",
            dir.display()
        )));
    }
    if outcome.mount_points > 0 {
        out.push(Note::Step(format!(
            "{} mount points kept as empty directories",
            outcome.mount_points
        )));
    }
    out
}
