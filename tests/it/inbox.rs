//! `sluicebox watch DIR`, the local inbox, as a user runs it: the built binary watching a
//! directory while files are copied, written slowly, renamed in, changed and dropped while it
//! is down, and killed and started again. Each file is loaded once, whole, across restarts; a
//! changed file is a new job; a bad file is reported and the next one loads; `[archive]`
//! moves a loaded file away for good.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const JOB: &str = r#"
[input]
format = "csv"
max_record_bytes = 256

[[columns]]
name = "id"
type = "integer"
required = true

[[columns]]
name = "name"
required = true

[key]
fields = ["id"]

[sink]
type = "sqlite"
table = "people"
"#;

/// How long a test waits for what it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// An inbox, a data directory and a job file, in a directory of their own.
struct Place {
    _root: tempfile::TempDir,
    inbox: PathBuf,
    data: PathBuf,
    job: PathBuf,
}

impl Place {
    fn new(job: &str) -> Place {
        let root = tempfile::tempdir().unwrap();
        let (inbox, data, config) = (root.path().join("inbox"), root.path().join("data"), root.path().join("job.toml"));
        std::fs::create_dir(&inbox).unwrap();
        std::fs::write(&config, job).unwrap();
        Place { inbox, data, job: config, _root: root }
    }

    /// `sluicebox watch INBOX` with `extra` arguments, once it watches.
    fn watch(&self, extra: &[&str]) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
            .arg("watch")
            .arg(&self.inbox)
            .arg("--config")
            .arg(&self.job)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--json", "--workers", "2", "--quiet-secs", "0.5"])
            .args(extra)
            .env("RUST_LOG", "sluicebox=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line)));
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, kept) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let w = Watching { child, lines, log, said: Vec::new() };
        let started = Instant::now();
        while !w.log.lock().unwrap().contains("watching the inbox") {
            assert!(started.elapsed() < PATIENCE, "watch did not start:\n{}", w.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn put(&self, name: &str, text: &str) -> PathBuf {
        let path = self.inbox.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The sink table's rows: id and name.
    fn rows(&self) -> Vec<(i64, String)> {
        let db = rusqlite::Connection::open(self.data.join("sluicebox.db")).unwrap();
        let mut q = db.prepare("SELECT id, name FROM people ORDER BY id").unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    /// The jobs in the bucket.
    fn jobs(&self) -> usize {
        std::fs::read_dir(self.data.join("bucket/jobs")).map_or(0, |d| d.count())
    }
}

/// A running `watch`, killed when dropped.
struct Watching {
    child: Child,
    lines: mpsc::Receiver<Value>,
    log: Arc<Mutex<String>>,
    /// Every outcome printed so far.
    said: Vec<Value>,
}

impl Watching {
    /// Wait for the outcome `what` of the file `name`, and return it.
    fn expect(&mut self, what: &str, name: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(o) = self.said.iter().find(|o| o["outcome"] == what && is(o, name)) {
                return o.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.said.push(line),
                Err(_) => panic!("no {what} for {name}; said {:?}\n{}", self.said, self.log.lock().unwrap()),
            }
        }
    }

    /// Whatever else it says for `quiet`.
    fn more(&mut self, quiet: Duration) -> Vec<Value> {
        let mut more = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            more.push(line.clone());
            self.said.push(line);
        }
        more
    }

    /// Wait for it to exit by itself (`--idle-exit-secs`), and return all it said.
    fn finish(mut self) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "watch did not exit:\n{}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.child.wait().unwrap();
        // The reader threads end with the pipes.
        std::thread::sleep(Duration::from_millis(100));
        self.more(Duration::from_millis(200));
        assert!(status.success(), "watch failed: {status}\n{}", self.log.lock().unwrap());
        std::mem::take(&mut self.said)
    }

    /// SIGKILL, as a crash or an out-of-memory kill would.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether outcome `o` is about the file `name`.
fn is(o: &Value, name: &str) -> bool {
    o["input"].as_str().is_some_and(|i| Path::new(i).file_name().is_some_and(|n| n == name))
}

fn count(said: &[Value], what: &str, name: &str) -> usize {
    said.iter().filter(|o| o["outcome"] == what && is(o, name)).count()
}

fn people(n: std::ops::RangeInclusive<i64>) -> String {
    n.fold("id,name\n".to_string(), |s, i| s + &format!("{i},person {i}\n"))
}

#[test]
fn a_file_copied_in_is_loaded_once_across_a_kill_and_one_dropped_while_down_is_loaded_at_start() {
    let place = Place::new(JOB);
    let source = place._root.path().join("one.csv");
    std::fs::write(&source, people(1..=3)).unwrap();
    let mut first = place.watch(&[]);
    std::fs::copy(&source, place.inbox.join("one.csv")).unwrap();
    let loaded = first.expect("loaded", "one.csv");
    assert_eq!(loaded["records"]["written"], 3, "{loaded}");
    assert_eq!(loaded["status"], "succeeded", "{loaded}");
    // Its open, its writes and its close are one file, loaded once.
    assert_eq!(first.more(Duration::from_secs(1)), Vec::<Value>::new());
    assert_eq!(place.rows().len(), 3);
    first.kill();

    // While it is down, a file lands; the first is still there.
    place.put("two.csv", &people(4..=5));
    let said = place.watch(&["--idle-exit-secs", "2"]).finish();
    assert_eq!(count(&said, "loaded", "two.csv"), 1, "{said:?}");
    assert_eq!(count(&said, "loaded", "one.csv"), 0, "loaded again after a restart: {said:?}");
    assert_eq!(count(&said, "repeated", "one.csv"), 1, "{said:?}");
    let repeated = said.iter().find(|o| o["outcome"] == "repeated").unwrap();
    assert_eq!(repeated["job_id"], loaded["job_id"], "the same file is the same job");
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(place.jobs(), 2);
    assert_eq!(place.rows().iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
}

#[test]
fn a_changed_file_is_a_new_job() {
    let place = Place::new(JOB);
    let mut watching = place.watch(&[]);
    let path = place.put("people.csv", &people(1..=2));
    let first = watching.expect("loaded", "people.csv");
    assert_eq!(first["records"]["total"], 2, "{first}");
    watching.said.clear();
    std::fs::write(&path, "id,name\n1,renamed\n2,person 2\n3,person 3\n").unwrap();
    let second = watching.expect("loaded", "people.csv");
    assert_ne!(second["job_id"], first["job_id"], "{second}");
    assert_eq!(second["records"]["total"], 3, "{second}");
    assert_eq!(watching.more(Duration::from_secs(1)), Vec::<Value>::new());
    assert_eq!(place.rows(), [(1, "renamed".into()), (2, "person 2".into()), (3, "person 3".into())]);
    assert_eq!(place.jobs(), 2);
}

#[test]
fn a_bad_file_is_reported_and_the_next_good_file_still_loads() {
    let place = Place::new(JOB);
    let mut watching = place.watch(&[]);
    // An unbalanced quote swallows the rest of the file: past max_record_bytes the plan stops.
    place.put("bad.csv", &format!("id,name\n1,\"never closed {}\n", "x".repeat(400)));
    let failed = watching.expect("failed", "bad.csv");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("bad.csv") && error.contains("line 2"), "{error}");
    place.put("good.csv", &people(1..=4));
    let loaded = watching.expect("loaded", "good.csv");
    assert_eq!(loaded["records"]["written"], 4, "{loaded}");
    assert!(watching.child.try_wait().unwrap().is_none(), "watch ended after a bad file");
    assert_eq!(place.rows().len(), 4);
    assert_eq!(count(&watching.said, "failed", "bad.csv"), 1, "{:?}", watching.said);
}

#[test]
fn a_file_written_slowly_is_loaded_once_and_whole() {
    let place = Place::new(JOB);
    let watching = place.watch(&["--idle-exit-secs", "2"]);
    let mut file = std::fs::File::create(place.inbox.join("slow.csv")).unwrap();
    file.write_all(people(1..=2).as_bytes()).unwrap();
    file.sync_all().unwrap();
    // Far longer than the quiet period: only the close says the file is complete.
    std::thread::sleep(Duration::from_secs(3));
    file.write_all(b"3,person 3\n4,person 4\n5,person 5\n").unwrap();
    drop(file);
    let said = watching.finish();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0]["outcome"], "loaded", "{said:?}");
    assert_eq!(said[0]["records"]["total"], 5, "{said:?}");
    assert_eq!(place.rows().len(), 5);
}

#[test]
fn with_archive_a_file_renamed_in_is_loaded_moved_away_and_never_taken_again() {
    let place = Place::new(&format!("{JOB}\n[archive]\nto = \"archive/\"\n"));
    let watching = place.watch(&["--idle-exit-secs", "2"]);
    // Names of files still being written, and hidden ones, are left alone.
    for name in ["x.csv.part", ".hidden.csv", "backup.csv~"] {
        place.put(name, &people(1..=2));
    }
    std::fs::rename(place.inbox.join("x.csv.part"), place.inbox.join("x.csv")).unwrap();
    let said = watching.finish();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(count(&said, "loaded", "x.csv"), 1, "{said:?}");
    let job_id = said[0]["job_id"].as_str().unwrap();
    assert!(place.inbox.join("archive").join(job_id).join("x.csv").is_file());
    assert!(!place.inbox.join("x.csv").exists());
    assert_eq!(place.rows().len(), 2);

    // Started again: the archived file (in a subdirectory) and the others are not taken.
    let said = place.watch(&["--idle-exit-secs", "2"]).finish();
    assert_eq!(said, Vec::<Value>::new());
    assert_eq!(place.jobs(), 1);
}
