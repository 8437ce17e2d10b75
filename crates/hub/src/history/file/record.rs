//! The acknowledgement record of the file store: a small file *beside* the store directory
//! (`PATH.head` for `--store file:PATH`) saying which positions the store had acknowledged, so
//! that a start can tell a damaged store from a healthy one.
//!
//! fjall recovers whatever its files still hold and says nothing when that is less than it was:
//! a truncated journal simply ends early, and without `keyspaces/0` (its catalogue of keyspaces)
//! it deletes every keyspace as unreferenced and starts empty. So the record is kept outside
//! fjall's files and outside the store directory, where the same damage cannot also erase it.
//!
//! The record holds two positions: `head`, a position up to which every update was acknowledged
//! (never ahead of what was synced), and `intact-from`: every position in `intact-from..=head`
//! is still in the store. Retention moves `intact-from` forward *before* it deletes, so what it
//! drops is never mistaken for loss. A start checks the recovered store against these two only
//! through first and last keys and fjall's approximate counts (no scan of the history).
//!
//! What is caught: a head below the record (the end of the journal lost), no updates or a
//! missing directory where the record says some were kept, the kept range short at either end,
//! and fewer entries than positions in the updates or the id index. What is not: a loss of only
//! the updates acknowledged after the last record write (the record follows the head at most
//! every second, and exactly on a clean shutdown), a hole hidden by the approximate count
//! (which also counts tombstones and not yet compacted versions), damaged contents under intact
//! keys (fjall's checksums report those when read), and a store restored together with its
//! record from the same older backup.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the store had acknowledged, as written in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    /// Every position up to this one was given to an acknowledged update.
    pub head: u64,
    /// Every position from this one to `head` is in the store (retention has not dropped it).
    pub intact_from: u64,
}

/// What fjall recovered, read cheaply at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    /// The highest position the store knows of (its `head` key or its newest update).
    pub head: u64,
    /// The oldest and newest update present, if any.
    pub range: Option<(u64, u64)>,
    /// fjall's approximate entry count of the updates: never below the real count (it counts
    /// tombstones and unflushed versions too), so fewer than a range needs proves holes.
    pub approximate_len: u64,
    /// The same for the id index, which has one entry per update kept.
    pub approximate_ids: u64,
}

/// Acknowledged updates that a start did not find: the store refuses to open (unless told to
/// accept the loss) instead of serving less than it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The store directory.
    pub store: PathBuf,
    /// The record beside it.
    pub record: PathBuf,
    pub(super) finding: Finding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Finding {
    /// The store directory is gone, but the record says updates were acknowledged.
    DirectoryMissing { head: u64 },
    /// The store holds less than the record says.
    Short { recorded: Record, found: Found },
    /// The record cannot be read, so nothing can be checked.
    RecordUnreadable(String),
}

impl std::error::Error for Damage {}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (store, record) = (self.store.display(), self.record.display());
        match &self.finding {
            Finding::DirectoryMissing { head } => write!(
                f,
                "the history store directory {store} is missing, but {record} records that \
                 updates up to position {head} were acknowledged (to start from an empty \
                 history on purpose, delete {record} as well)"
            ),
            Finding::Short { recorded, found } => {
                write!(f, "the history store at {store} recovered ")?;
                match found.range {
                    Some((first, last)) => write!(f, "positions {first}..={last}")?,
                    None => write!(f, "no updates")?,
                }
                if found.range.is_none_or(|(_, last)| last != found.head) {
                    write!(f, " (head {})", found.head)?;
                }
                write!(
                    f,
                    ", but {record} records that updates up to position {} were acknowledged",
                    recorded.head
                )?;
                let expected = intact_range(recorded, found);
                if let Some((from, to)) = expected {
                    write!(f, " and that positions {from}..={to} are kept")?;
                }
                write!(f, ": {}", missing(recorded, found).join("; "))
            }
            Finding::RecordUnreadable(err) => write!(
                f,
                "cannot tell whether the history store at {store} is complete: its record \
                 {record} is unreadable ({err})"
            ),
        }
    }
}

/// The positions that must all be present: from `intact_from` to the higher of both heads (the
/// recovered head may be ahead of a record written up to a second before a crash).
fn intact_range(recorded: &Record, found: &Found) -> Option<(u64, u64)> {
    let to = recorded.head.max(found.head);
    (recorded.intact_from <= to).then_some((recorded.intact_from, to))
}

/// What is missing, in words; empty if nothing is.
fn missing(recorded: &Record, found: &Found) -> Vec<String> {
    let mut missing = Vec::new();
    if found.head < recorded.head {
        // Below `intact_from`, retention may have dropped the updates themselves: then only the
        // position counter went back.
        let from = (found.head + 1).max(recorded.intact_from);
        if from <= recorded.head {
            missing.push(format!("positions {from}..={} are missing", recorded.head));
        } else {
            missing.push(format!(
                "the head went back from {} to {}",
                recorded.head, found.head
            ));
        }
    }
    let Some((from, to)) = intact_range(recorded, found) else {
        return missing;
    };
    let Some((first, last)) = found.range else {
        if found.head >= recorded.head {
            missing.push(format!("positions {from}..={to} are missing"));
        }
        return missing;
    };
    if first > from {
        missing.push(format!(
            "the oldest positions {from}..={} are missing",
            first - 1
        ));
    }
    // A head short of the record was reported above.
    if last < to && found.head >= recorded.head {
        missing.push(format!(
            "the newest positions {}..={to} are missing",
            last + 1
        ));
    }
    let needed = to - from + 1;
    if missing.is_empty() {
        if found.approximate_len < needed {
            missing.push(format!(
                "at most {} of those {needed} positions are present",
                found.approximate_len
            ));
        } else if found.approximate_ids < needed {
            // The updates are there, but `Last-Event-ID` could no longer find them.
            missing.push(format!(
                "the id index holds at most {} entries for those {needed} updates",
                found.approximate_ids
            ));
        }
    }
    missing
}

/// Checks what was recovered against the record. `Ok` is the record to write now (the head
/// recovered may be ahead of the record); `Err` says what is missing.
pub(super) fn check(recorded: Option<Record>, found: &Found) -> Result<Record, Finding> {
    let Some(recorded) = recorded else {
        // No record (a new store, or one made before records existed): vouch for what is
        // there if it is whole, else only for what comes next.
        let whole = match found.range {
            Some((first, _)) => Record {
                head: found.head,
                intact_from: first,
            },
            None => Record {
                head: found.head,
                intact_from: found.head + 1,
            },
        };
        if missing(&whole, found).is_empty() {
            return Ok(whole);
        }
        tracing::warn!(
            head = found.head,
            "the history store has no record and is not whole (holes, or a head beyond its \
             newest update); only updates from now on are checked at start"
        );
        return Ok(Record {
            head: found.head,
            intact_from: found.head + 1,
        });
    };
    if !missing(&recorded, found).is_empty() {
        return Err(Finding::Short {
            recorded,
            found: *found,
        });
    }
    Ok(Record {
        head: recorded.head.max(found.head),
        intact_from: recorded.intact_from,
    })
}

/// The record for the store directory `store`: `PATH.head` beside it, so that it survives the
/// directory being deleted.
pub(super) fn path_beside(store: &Path) -> std::io::Result<PathBuf> {
    // `.`, `..` or `dir/..` have no name of their own: name them by what they are.
    let store = match store.file_name() {
        Some(_) => store.to_path_buf(),
        None => store.canonicalize()?,
    };
    let Some(name) = store.file_name() else {
        return Err(std::io::Error::other(format!(
            "{} has no parent directory to keep the store's record in",
            store.display()
        )));
    };
    let mut name = name.to_os_string();
    name.push(".head");
    Ok(store.with_file_name(name))
}

const MAGIC: &str = "herald-history-record 1";

impl Record {
    /// Reads the record; `Ok(None)` if there is none.
    pub(super) fn read(path: &Path) -> Result<Option<Record>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.to_string()),
        };
        Record::parse(&text).map(Some)
    }

    fn parse(text: &str) -> Result<Record, String> {
        let mut lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty());
        if lines.next() != Some(MAGIC) {
            return Err(format!("it does not start with {MAGIC:?}"));
        }
        let (mut head, mut intact_from) = (None, None);
        for line in lines {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("bad line {line:?}"))?;
            let value: u64 = value
                .parse()
                .map_err(|e| format!("bad number in {line:?}: {e}"))?;
            match key {
                "head" => head = Some(value),
                "intact-from" => intact_from = Some(value),
                _ => return Err(format!("unknown key in {line:?}")),
            }
        }
        match (head, intact_from) {
            (Some(head), Some(intact_from)) => Ok(Record { head, intact_from }),
            _ => Err("head or intact-from is missing".into()),
        }
    }

    fn format(&self) -> String {
        format!(
            "# What the herald file store beside this file acknowledged; checked at every start.\n\
             # Do not edit: `herald serve --accept-history-loss` rewrites it after a loss.\n\
             {MAGIC}\nhead {}\nintact-from {}\n",
            self.head, self.intact_from
        )
    }

    /// Replaces the record atomically and durably: a crash leaves the old record or the new one,
    /// never a torn one.
    pub(super) fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut temp = path.as_os_str().to_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(self.format().as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        // The rename is durable only once the directory holding it is synced.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(head: u64, intact_from: u64) -> Record {
        Record { head, intact_from }
    }

    fn found(head: u64, range: Option<(u64, u64)>, approximate_len: u64) -> Found {
        Found {
            head,
            range,
            approximate_len,
            approximate_ids: approximate_len,
        }
    }

    #[test]
    fn a_whole_store_passes_and_moves_the_head() {
        let r = record(100, 1);
        assert_eq!(check(Some(r), &found(100, Some((1, 100)), 100)), Ok(r));
        // Updates acknowledged after the last record write (a crash): the record catches up.
        assert_eq!(
            check(Some(r), &found(120, Some((1, 120)), 130)),
            Ok(record(120, 1))
        );
        // Retention dropped some beyond `intact_from` before the crash? It cannot: it moves
        // `intact_from` first. Updates older than `intact_from` may be there or not.
        assert!(check(Some(record(100, 40)), &found(100, Some((1, 100)), 100)).is_ok());
        assert!(check(Some(record(100, 40)), &found(100, Some((30, 100)), 71)).is_ok());
        // Retention dropped everything: only the head remains, and that is whole.
        assert!(check(Some(record(100, 101)), &found(100, None, 0)).is_ok());
        // Nothing acknowledged yet.
        assert!(check(Some(record(0, 1)), &found(0, None, 0)).is_ok());
    }

    #[test]
    fn less_than_recorded_is_a_finding() {
        let r = record(46_320, 1);
        let truncated = found(23_174, Some((1, 23_174)), 23_174);
        let Err(finding) = check(Some(r), &truncated) else {
            panic!("a truncated journal passed");
        };
        let damage = Damage {
            store: "./herald-data".into(),
            record: "./herald-data.head".into(),
            finding,
        };
        assert_eq!(
            damage.to_string(),
            "the history store at ./herald-data recovered positions 1..=23174, but \
             ./herald-data.head records that updates up to position 46320 were acknowledged \
             and that positions 1..=46320 are kept: positions 23175..=46320 are missing"
        );
        let emptied = check(Some(r), &found(0, None, 0));
        assert!(emptied.is_err(), "an emptied store passed");
        // The head key survived but the newest updates did not.
        assert!(check(Some(r), &found(46_320, Some((1, 40_000)), 40_000)).is_err());
        // The oldest are gone although retention had not dropped them.
        assert!(check(Some(r), &found(46_320, Some((9, 46_320)), 46_312)).is_err());
        // A hole: fewer entries than positions, even counting tombstones.
        let holes = check(Some(r), &found(46_320, Some((1, 46_320)), 30_000));
        assert!(holes.is_err(), "a hole passed");
        let no_index = Found {
            approximate_ids: 0,
            ..found(46_320, Some((1, 46_320)), 46_320)
        };
        assert!(check(Some(r), &no_index).is_err(), "a lost id index passed");
        // The head went back, though retention had dropped every update.
        assert!(check(Some(record(100, 101)), &found(0, None, 0)).is_err());
    }

    #[test]
    fn no_record_vouches_for_a_whole_store_only() {
        assert_eq!(check(None, &found(0, None, 0)), Ok(record(0, 1)));
        assert_eq!(
            check(None, &found(50, Some((11, 50)), 40)),
            Ok(record(50, 11))
        );
        assert_eq!(
            check(None, &found(50, Some((11, 50)), 20)),
            Ok(record(50, 51)),
            "holes of unknown origin: only what comes next is vouched for"
        );
        assert_eq!(check(None, &found(50, None, 0)), Ok(record(50, 51)));
    }

    #[test]
    fn the_record_lives_beside_the_directory() {
        assert_eq!(
            path_beside(Path::new("./herald-data")).unwrap(),
            Path::new("./herald-data.head")
        );
        assert_eq!(
            path_beside(Path::new("/var/lib/herald/")).unwrap(),
            Path::new("/var/lib/herald.head")
        );
        assert_eq!(
            path_beside(Path::new("data")).unwrap(),
            Path::new("data.head")
        );
        let here = std::env::current_dir().unwrap();
        let mut name = here.file_name().unwrap().to_os_string();
        name.push(".head");
        assert_eq!(
            path_beside(Path::new(".")).unwrap(),
            here.with_file_name(name)
        );
        assert!(path_beside(Path::new("/")).is_err());
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.head");
        assert_eq!(Record::read(&path), Ok(None));
        record(46_320, 7).write(&path).unwrap();
        assert_eq!(Record::read(&path), Ok(Some(record(46_320, 7))));
        for bad in [
            "",
            "head 1\nintact-from 1\n",
            "herald-history-record 1\nhead 1\n",
            "herald-history-record 1\nhead x\nintact-from 1\n",
            "herald-history-record 1\nhead 1\nintact-from 1\nmore 2\n",
        ] {
            assert!(Record::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
