//! `sluicebox watch DIR`: a local inbox. Every file that lands in a directory starts a job,
//! run here, once the file is complete.
//!
//! **When a file is complete.** The file system's notifications come through the `notify`
//! crate. A file is taken when it is closed after writing (inotify's `CLOSE_WRITE`) or renamed
//! or moved into the directory. Where the watcher reports no close (macOS, Windows), and for
//! what nobody told us about (the files already there at start-up, and all of them again
//! after the kernel's event queue overflowed), a file is taken once its size and modification
//! time have stayed the same for a quiet period (or it was last modified longer ago than
//! that). A file in the middle of a write at start-up that is written again is then followed
//! by its events: its close starts it.
//!
//! **Which files.** The files directly in the directory, as `sluicebox run DIR` takes them:
//! not hidden (a name starting with `.`), and not named as a file still being written (`~`,
//! `.part`, `.partial`, `.tmp`, `.crdownload`, `.download`, `.swp`, `#…#`): such a file is
//! taken when it is renamed to its final name. Subdirectories are not watched, so an
//! `[archive]` kept inside the inbox (`to = "archive/"`) never feeds it again.
//!
//! **Once across restarts.** A file's job id is the one `run` derives
//! ([`job::derive_job_id`]): from its path, size and version (the file's inode and
//! modification time) and the job definition. The same file seen again (a repeated event, a
//! restart that finds it still there) finds its job in the ledger, complete, and is not loaded
//! again; a changed file is a new job; a job cut off by a stop is resumed. With `[archive]`
//! the file moves away once its job completed, and a restart no longer sees it.
//!
//! **One at a time, and never down.** Jobs run one after another, in the order their files
//! became complete, each on its own task: a job that fails (a bad file, even one that made
//! its planner panic) is reported and the inbox goes on with the next file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::Watcher;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::batch::job::{self, RecordCounts, RunOptions};
use crate::engine::spec::JobSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Whether this platform's watcher reports a file closed after writing (inotify does; macOS's
/// FSEvents and Windows do not, and there every file waits for its quiet period).
pub const REPORTS_CLOSE: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Its job ran to the end.
    Loaded {
        /// The file.
        input: String,
        /// Its job.
        job_id: String,
        /// `succeeded` or `completed_with_rejects`.
        status: String,
        /// The job's record counts.
        records: RecordCounts,
    },
    /// Its job was complete already: the same file, seen again.
    Repeated {
        /// The file.
        input: String,
        /// Its job.
        job_id: String,
    },
    /// Its job could not run (a bad file, a bad setting, a backend): the inbox goes on.
    Failed {
        /// The file.
        input: String,
        /// Its job, when the file could be read far enough to name it.
        job_id: Option<String>,
        /// Why.
        error: String,
    },
    /// The file went away before its job started.
    Ignored {
        /// The file.
        input: String,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Loaded { input, job_id, status, records: r } => write!(
                f,
                "loaded {input}: job {job_id} {status}: {} records: {} written, {} rejected, {} filtered",
                r.total, r.written, r.rejected, r.filtered
            ),
            Outcome::Repeated { input, job_id } => write!(f, "{input} was loaded by job {job_id}; not loaded again"),
            Outcome::Failed { input, job_id: Some(job_id), error } => {
                write!(f, "failed {input} (job {job_id}): {error}")
            }
            Outcome::Failed { input, job_id: None, error } => write!(f, "failed {input}: {error}"),
            Outcome::Ignored { input, reason } => write!(f, "ignored {input}: {reason}"),
        }
    }
}

/// Whether the inbox takes a file by its name: not hidden, and not the name of a file still
/// being written (a download, an upload, an editor's backup or swap file).
pub fn takes(name: &str) -> bool {
    const UNFINISHED: [&str; 6] = [".part", ".partial", ".tmp", ".crdownload", ".download", ".swp"];
    let lower = name.to_ascii_lowercase();
    let hidden = name.starts_with('.');
    let backup = name.ends_with('~') || (name.starts_with('#') && name.ends_with('#'));
    !name.is_empty() && !hidden && !backup && !UNFINISHED.iter().any(|s| lower.ends_with(s))
}

/// What an event says of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Created or written to: more may come.
    Writing,
    /// Closed after writing, or renamed or moved in: complete.
    Complete,
    /// There, with nothing known of its writer (a scan, a rename of unknown direction).
    Found,
    /// Removed, or renamed or moved away.
    Gone,
}

/// What one notification asks of the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Events were lost (the kernel's queue overflowed): look at the directory again.
    Rescan,
    /// A file of the inbox was seen.
    File(PathBuf, Seen),
}

/// What `event` says of the files directly in `dir` that the inbox takes ([`takes`]);
/// access, metadata and directory events say nothing.
pub fn classify(event: &notify::Event, dir: &Path) -> Vec<Change> {
    if event.need_rescan() {
        return vec![Change::Rescan];
    }
    let seen: Vec<(usize, Seen)> = match event.kind {
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
            (0..event.paths.len()).map(|i| (i, Seen::Writing)).collect()
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => vec![(0, Seen::Complete)],
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => vec![(0, Seen::Complete)],
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => vec![(0, Seen::Gone)],
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => vec![(0, Seen::Gone), (1, Seen::Complete)],
        EventKind::Modify(ModifyKind::Name(_)) => (0..event.paths.len()).map(|i| (i, Seen::Found)).collect(),
        EventKind::Remove(_) => (0..event.paths.len()).map(|i| (i, Seen::Gone)).collect(),
        _ => Vec::new(),
    };
    seen.into_iter()
        .filter_map(|(i, s)| event.paths.get(i).map(|p| (p, s)))
        .filter(|(p, _)| in_inbox(p, dir))
        .map(|(p, s)| Change::File(p.clone(), s))
        .collect()
}

/// Whether `path` is a file directly in `dir` with a name the inbox takes.
fn in_inbox(path: &Path, dir: &Path) -> bool {
    path.parent() == Some(dir) && path.file_name().and_then(|n| n.to_str()).is_some_and(takes)
}

/// A file's size and modification time: what tells that it is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Bytes.
    pub len: u64,
    /// Last modified.
    pub modified: SystemTime,
}

/// The size and modification time of a regular file (`None`: gone, or not a file).
pub fn stat(path: &Path) -> Option<Stat> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some(Stat { len: meta.len(), modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH) })
}

/// When a pending file is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Now: it was closed after writing, or renamed in.
    Now,
    /// At its close, which the watcher will report.
    Close,
    /// When its size and modification time have not changed for the quiet period.
    Quiet,
}

#[derive(Debug)]
struct Pending {
    rule: Rule,
    /// What the last look found, and since when.
    stat: Option<Stat>,
    since: Instant,
    /// Its place in the order files were seen.
    order: u64,
}

/// The files seen but not yet started, and when each is complete. It decides; the caller
/// looks at the clock and the disk ([`Tracker::ready`] takes both as parameters).
#[derive(Debug)]
pub struct Tracker {
    quiet: Duration,
    reports_close: bool,
    pending: BTreeMap<PathBuf, Pending>,
    seen: u64,
}

impl Tracker {
    /// A tracker taking quiet files after `quiet`, waiting for a written file's close when
    /// the watcher `reports_close` ([`REPORTS_CLOSE`]).
    pub fn new(quiet: Duration, reports_close: bool) -> Tracker {
        Tracker { quiet, reports_close, pending: BTreeMap::new(), seen: 0 }
    }

    /// Note what an event (or a scan) says of `path`.
    pub fn note(&mut self, path: PathBuf, seen: Seen, now: Instant) {
        let rule = match seen {
            Seen::Gone => {
                self.pending.remove(&path);
                return;
            }
            Seen::Complete => Rule::Now,
            Seen::Writing if self.reports_close => Rule::Close,
            Seen::Writing | Seen::Found => Rule::Quiet,
        };
        let order = self.seen;
        self.seen += 1;
        let entry = self.pending.entry(path).or_insert(Pending { rule, stat: None, since: now, order });
        // A scan says less than an event: a file awaiting its close or started by one keeps
        // its rule.
        if seen != Seen::Found {
            entry.rule = rule;
        }
    }

    /// Note the files a scan of the directory found. After lost events, a close a pending
    /// file waits for may have been among them: every such file falls back to the quiet
    /// period.
    pub fn rescan(&mut self, files: Vec<PathBuf>, now: Instant) {
        for p in self.pending.values_mut().filter(|p| p.rule == Rule::Close) {
            p.rule = Rule::Quiet;
        }
        for f in files {
            self.note(f, Seen::Found, now);
        }
    }

    /// The first file, in the order they were seen, that is complete now (`now` on the
    /// monotonic clock, `wall` on the system's, which file times are on), taken out of the
    /// pending files; files `stat` no longer finds are dropped.
    pub fn ready(&mut self, now: Instant, wall: SystemTime, stat: impl Fn(&Path) -> Option<Stat>) -> Option<PathBuf> {
        let mut order: Vec<(u64, PathBuf)> = self.pending.iter().map(|(p, e)| (e.order, p.clone())).collect();
        order.sort();
        for (_, path) in order {
            let Some(found) = stat(&path) else {
                self.pending.remove(&path);
                continue;
            };
            let Some(p) = self.pending.get_mut(&path) else { continue };
            let complete = match p.rule {
                Rule::Now => true,
                Rule::Close => false,
                Rule::Quiet => {
                    if p.stat != Some(found) {
                        p.stat = Some(found);
                        p.since = now;
                    }
                    let untouched = wall.duration_since(found.modified).unwrap_or(Duration::ZERO);
                    now.duration_since(p.since) >= self.quiet || untouched >= self.quiet
                }
            };
            if complete {
                self.pending.remove(&path);
                return Some(path);
            }
        }
        None
    }

    /// Whether no file is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The files directly in `dir` that the inbox takes.
pub fn scan(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir.display().to_string(), e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| in_inbox(p, dir) && std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.sort();
    Ok(files)
}

/// Run the job of the file at `path`, and say what became of it.
pub async fn load(engine: &Engine, spec: &JobSpec, path: &Path, opts: &RunOptions) -> Outcome {
    let input = path.display().to_string();
    let (format, compression) = (spec.input.format, spec.input.compression);
    let resolved = crate::backends::bucket::resolve_inputs(
        engine.inputs.as_ref(),
        std::slice::from_ref(&input),
        format,
        compression,
    )
    .await;
    let inputs = match resolved {
        Ok(inputs) => inputs,
        Err(_) if stat(path).is_none() => {
            return Outcome::Ignored { input, reason: "gone before its job started".into() };
        }
        Err(e) => return Outcome::Failed { input, job_id: None, error: e.to_string() },
    };
    let job_id = job::derive_job_id(&inputs, spec);
    match job::run(engine, spec, inputs, opts).await {
        Ok(summary) if summary.already_complete => Outcome::Repeated { input, job_id: summary.job_id },
        Ok(summary) => {
            Outcome::Loaded { input, job_id: summary.job_id, status: summary.status, records: summary.records }
        }
        Err(e) => Outcome::Failed { input, job_id: Some(job_id), error: e.to_string() },
    }
}

/// How [`serve`] runs.
#[derive(Debug, Clone)]
pub struct Inbox {
    /// The directory: a path, or a `file://` URL.
    pub dir: String,
    /// How long a file nobody reported closed must stay unchanged before it is taken.
    pub quiet: Duration,
    /// After the first stop signal, how long the job in hand may take to finish.
    pub grace: Duration,
    /// Stop after this long without an event or a job, with no file waiting.
    pub idle_exit: Option<Duration>,
}

/// The inbox's directory, whole and with its links resolved (the watcher names files under
/// the path it was given).
pub fn open_dir(dir: &str) -> Result<PathBuf> {
    let given = dir.strip_prefix("file://").unwrap_or(dir);
    let path = std::fs::canonicalize(given).map_err(|e| Error::config("DIR", format!("{given}: {e}")))?;
    if !path.is_dir() {
        return Err(Error::config("DIR", format!("{given} is not a directory")));
    }
    Ok(path)
}

/// Start a job for every file that becomes complete in `how.dir` (those there already
/// first), one at a time, until stopped (a signal, or `how.idle_exit`). `report` hears what
/// became of each file.
pub async fn serve(
    engine: &Engine,
    spec: &JobSpec,
    how: &Inbox,
    opts: &RunOptions,
    report: &mut dyn FnMut(&Outcome),
) -> Result<()> {
    let dir = open_dir(&how.dir)?;
    // A bounded channel: while a job runs and events pile up, the watcher's thread waits,
    // the kernel's queue fills and overflows, and the overflow asks for a rescan. Memory
    // stays bounded whatever lands.
    let (tx, mut events) = mpsc::channel::<notify::Result<notify::Event>>(4096);
    let mut watcher = notify::recommended_watcher(move |e| {
        let _ = tx.blocking_send(e);
    })
    .map_err(|e| Error::internal("notify", "cannot start the file system watcher", e))?;
    // Watch first, then scan: a file that lands in between is seen by one or both.
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::internal("notify", format!("cannot watch {}", dir.display()), e))?;
    let mut tracker = Tracker::new(how.quiet, REPORTS_CLOSE);
    tracker.rescan(scan(&dir)?, Instant::now());
    info!(dir = %dir.display(), "watching the inbox");
    let stop = Stop::on_signals(how.grace);
    let tick = (how.quiet / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    let mut last = Instant::now();
    let mut open = true;
    while !stop.stopping.is_cancelled() {
        while let Ok(e) = events.try_recv() {
            take(&mut tracker, &dir, e);
            last = Instant::now();
        }
        if let Some(path) = tracker.ready(Instant::now(), SystemTime::now(), stat) {
            let (engine, spec, opts, file) = (engine.clone(), spec.clone(), opts.clone(), path.clone());
            let mut job = tokio::spawn(async move { load(&engine, &spec, &file, &opts).await });
            let outcome = loop {
                tokio::select! {
                    done = &mut job => break Some(done.unwrap_or_else(|e| Outcome::Failed {
                        input: path.display().to_string(),
                        job_id: None,
                        error: format!("the job stopped: {e}"),
                    })),
                    e = events.recv(), if open => match e {
                        Some(e) => take(&mut tracker, &dir, e),
                        None => open = false,
                    },
                    _ = stop.abort.cancelled() => {
                        warn!(file = %path.display(), "stopping: the job is left to resume at the next start");
                        job.abort();
                        break None;
                    }
                }
            };
            match outcome {
                Some(o) => report(&o),
                None => break,
            }
            last = Instant::now();
            continue;
        }
        if how.idle_exit.is_some_and(|idle| tracker.is_empty() && last.elapsed() >= idle) {
            break;
        }
        tokio::select! {
            _ = stop.stopping.cancelled() => {}
            e = events.recv(), if open => match e {
                Some(e) => {
                    take(&mut tracker, &dir, e);
                    last = Instant::now();
                }
                None => open = false,
            },
            _ = tokio::time::sleep(tick) => {}
        }
        if !open {
            return Err(Error::internal("notify", "the file system watcher stopped", format!("{}", dir.display())));
        }
    }
    drop(watcher);
    Ok(())
}

/// Note one notification (or a watcher's error, after which events may be missing).
fn take(tracker: &mut Tracker, dir: &Path, event: notify::Result<notify::Event>) {
    let changes = match event {
        Ok(e) => classify(&e, dir),
        Err(e) => {
            warn!("the file system watcher reported an error, looking at the inbox again: {e}");
            vec![Change::Rescan]
        }
    };
    let now = Instant::now();
    for c in changes {
        match c {
            Change::File(path, seen) => {
                debug!(file = %path.display(), ?seen, "inbox event");
                tracker.note(path, seen, now);
            }
            Change::Rescan => match scan(dir) {
                Ok(files) => {
                    warn!("file system events were lost: looking at the inbox again");
                    tracker.rescan(files, now);
                }
                Err(e) => warn!("cannot list the inbox: {e}"),
            },
        }
    }
}

/// The stop signals: the first stops taking files (the job in hand finishes); a second, or
/// the grace period after the first, leaves the job in hand to resume at the next start.
struct Stop {
    stopping: CancellationToken,
    abort: CancellationToken,
    watcher: tokio::task::JoinHandle<()>,
}

impl Stop {
    fn on_signals(grace: Duration) -> Stop {
        let (stopping, abort) = (CancellationToken::new(), CancellationToken::new());
        let (s, a) = (stopping.clone(), abort.clone());
        let watcher = tokio::spawn(async move {
            if crate::batch::pool::stop_signal().await.is_err() {
                return;
            }
            warn!("stopping: finishing the job in hand (signal again to leave it for the next start)");
            s.cancel();
            tokio::select! {
                _ = crate::batch::pool::stop_signal() => {}
                _ = tokio::time::sleep(grace) => {}
            }
            a.cancel();
        });
        Stop { stopping, abort, watcher }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn hidden_and_unfinished_names_are_not_taken() {
        for name in ["orders.csv", "orders", "2024-01-01.jsonl.gz", "part-1.json"] {
            assert!(takes(name), "{name}");
        }
        for name in [".orders.csv", ".orders.csv.XXXX", "orders.csv~", "orders.csv.part", "o.CSV.PART", "a.tmp"] {
            assert!(!takes(name), "{name}");
        }
        for name in ["o.crdownload", "o.partial", ".o.csv.swp", "#o.csv#", ""] {
            assert!(!takes(name), "{name}");
        }
    }

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths.iter().fold(notify::Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    #[test]
    fn events_say_written_complete_or_gone_of_the_inbox_files_only() {
        let dir = Path::new("/in");
        let file = |p: &str, s| Change::File(PathBuf::from(p), s);
        let created = event(EventKind::Create(CreateKind::File), &["/in/a.csv"]);
        assert_eq!(classify(&created, dir), [file("/in/a.csv", Seen::Writing)]);
        let written = event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["/in/a.csv"]);
        assert_eq!(classify(&written, dir), [file("/in/a.csv", Seen::Writing)]);
        let closed = event(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/in/a.csv"]);
        assert_eq!(classify(&closed, dir), [file("/in/a.csv", Seen::Complete)]);
        let renamed = event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/in/a.csv.part", "/in/a.csv"]);
        assert_eq!(classify(&renamed, dir), [file("/in/a.csv", Seen::Complete)]);
        let moved_in = event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/in/b.csv"]);
        assert_eq!(classify(&moved_in, dir), [file("/in/b.csv", Seen::Complete)]);
        let moved_away = event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/in/b.csv", "/out/b.csv"]);
        assert_eq!(classify(&moved_away, dir), [file("/in/b.csv", Seen::Gone)]);
        let removed = event(EventKind::Remove(RemoveKind::File), &["/in/b.csv"]);
        assert_eq!(classify(&removed, dir), [file("/in/b.csv", Seen::Gone)]);
        // Not the inbox's: a file in a subdirectory (the archive), a hidden or unfinished one;
        // nor an open, a read or a metadata change.
        let archived = event(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/in/archive/j/a.csv"]);
        assert!(classify(&archived, dir).is_empty());
        let part = event(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/in/a.csv.part"]);
        assert!(classify(&part, dir).is_empty());
        let opened = event(EventKind::Access(AccessKind::Open(AccessMode::Any)), &["/in/a.csv"]);
        assert!(classify(&opened, dir).is_empty());
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(classify(&overflow, dir), [Change::Rescan]);
    }

    fn at(len: u64, modified: SystemTime) -> impl Fn(&Path) -> Option<Stat> {
        move |_| Some(Stat { len, modified })
    }

    #[test]
    fn a_written_file_waits_for_its_close_however_long_it_is_quiet() {
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut t = Tracker::new(SEC, true);
        t.note("/in/a.csv".into(), Seen::Writing, t0);
        let old = wall - 60 * SEC;
        assert_eq!(t.ready(t0 + 100 * SEC, wall, at(10, old)), None);
        t.note("/in/a.csv".into(), Seen::Complete, t0 + 100 * SEC);
        assert_eq!(t.ready(t0 + 100 * SEC, wall, at(10, old)), Some(PathBuf::from("/in/a.csv")));
        assert!(t.is_empty());
    }

    #[test]
    fn a_found_file_is_taken_once_unchanged_for_the_quiet_period() {
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut t = Tracker::new(SEC, true);
        t.rescan(vec!["/in/a.csv".into()], t0);
        // Modified just now: it may still be being written.
        assert_eq!(t.ready(t0, wall, at(10, wall)), None);
        // It grew: the quiet period starts again.
        assert_eq!(t.ready(t0 + SEC / 2, wall + SEC / 2, at(20, wall + SEC / 2)), None);
        assert_eq!(t.ready(t0 + SEC, wall + SEC, at(20, wall + SEC / 2)), None);
        assert_eq!(t.ready(t0 + 3 * SEC / 2, wall + SEC, at(20, wall + SEC / 2)), Some(PathBuf::from("/in/a.csv")));
        // One last modified long ago is taken at once.
        t.rescan(vec!["/in/b.csv".into()], t0);
        assert_eq!(t.ready(t0, wall, at(5, wall - 10 * SEC)), Some(PathBuf::from("/in/b.csv")));
    }

    #[test]
    fn a_found_file_written_again_waits_for_its_close_and_after_lost_events_for_quiet() {
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let old = wall - 60 * SEC;
        let mut t = Tracker::new(SEC, true);
        t.rescan(vec!["/in/a.csv".into()], t0);
        t.note("/in/a.csv".into(), Seen::Writing, t0);
        assert_eq!(t.ready(t0 + 10 * SEC, wall, at(10, old)), None);
        // A scan (after an overflow) cannot know whether the close was lost.
        t.rescan(vec!["/in/a.csv".into()], t0 + 10 * SEC);
        assert_eq!(t.ready(t0 + 10 * SEC, wall, at(10, old)), Some(PathBuf::from("/in/a.csv")));
        // Where no close is reported, a written file waits for quiet.
        let mut t = Tracker::new(SEC, false);
        t.note("/in/c.csv".into(), Seen::Writing, t0);
        assert_eq!(t.ready(t0, wall, at(10, wall)), None);
        assert_eq!(t.ready(t0 + 2 * SEC, wall + 2 * SEC, at(10, wall)), Some(PathBuf::from("/in/c.csv")));
    }

    #[test]
    fn files_are_taken_in_the_order_seen_and_gone_ones_are_dropped() {
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut t = Tracker::new(SEC, true);
        t.note("/in/z.csv".into(), Seen::Complete, t0);
        t.note("/in/a.csv".into(), Seen::Complete, t0);
        t.note("/in/gone.csv".into(), Seen::Complete, t0);
        t.note("/in/away.csv".into(), Seen::Complete, t0);
        t.note("/in/away.csv".into(), Seen::Gone, t0);
        let some = |p: &Path| (!p.ends_with("gone.csv")).then_some(Stat { len: 1, modified: wall });
        assert_eq!(t.ready(t0, wall, some), Some(PathBuf::from("/in/z.csv")));
        assert_eq!(t.ready(t0, wall, some), Some(PathBuf::from("/in/a.csv")));
        assert_eq!(t.ready(t0, wall, some), None);
        assert!(t.is_empty());
    }
}
