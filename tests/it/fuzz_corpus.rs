//! The fuzz targets' committed corpus (`fuzz/corpus/<target>/`) and every input a fuzzer
//! once crashed on (`fuzz/regressions/<target>/`), replayed on the stable toolchain through
//! the same checks `cargo fuzz` runs (`sluicebox::fuzzing`).

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let caught = std::panic::catch_unwind(|| check(&data));
            assert!(caught.is_ok(), "{} broke a check (see the panic above)", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 5, "the {target} corpus is in the repository ({replayed} inputs found)");
}

#[test]
fn input_corpus() {
    replay("input", sluicebox::fuzzing::input);
}

#[test]
fn job_file_corpus() {
    replay("job_file", sluicebox::fuzzing::job_file);
}

#[test]
fn s3_event_corpus() {
    replay("s3_event", sluicebox::fuzzing::s3_event);
}

#[test]
fn resume_points_corpus() {
    replay("resume_points", sluicebox::fuzzing::resume_points);
}

#[test]
fn partition_corpus() {
    replay("partition", sluicebox::fuzzing::partition);
}

#[test]
fn redaction_corpus() {
    replay("redaction", sluicebox::fuzzing::redaction);
}

/// The resume-points seeds reach the check of every chunk, crafted streams included.
#[test]
fn resume_points_seeds_are_read_back_chunk_by_chunk() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/resume_points");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let checked = sluicebox::fuzzing::resume_points_checked(&std::fs::read(&path).unwrap());
        assert!(checked >= 3, "{}: {checked} chunks read back", path.display());
    }
}
