//! Replays the committed fuzz corpus and every fixed crash as an ordinary `cargo test`.
//!
//! The inputs are the files under `fuzz/corpus/TARGET/` and `fuzz/regressions/TARGET/`. The
//! properties are the fuzz targets' own: `fuzz/src/lib.rs` is included here as a module, so the
//! fuzzers and this test cannot drift apart. A missing or empty corpus fails the test rather
//! than passing with nothing checked.

#[allow(unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A target's property: panics when it fails, returns whether the input decoded.
type Check = fn(&[u8]) -> bool;

/// Every fuzz target, by its directory name, with the property it checks.
const TARGETS: [(&str, Check); 5] = [
    ("frame_decoder", checks::check_frame_stream),
    ("method", checks::check_method),
    ("field_table", checks::check_field_table),
    ("content_header", checks::check_content_header),
    ("engine", checks::check_engine),
];

/// `fuzz/` in the repository.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly in `dir`, sorted; `None` when `dir` does not exist.
fn files_in(dir: &Path) -> Option<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Some(files)
}

/// Runs `check` on every file in `files`, naming the file whose input fails; returns how many
/// of the inputs decoded to something.
fn replay(target: &str, check: Check, files: &[PathBuf]) -> usize {
    let mut decoded = 0;
    for path in files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        match panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Ok(true) => decoded += 1,
            Ok(false) => {}
            Err(_) => panic!(
                "{target}: {} fails (replay it with `cargo fuzz run {target} {}`)",
                path.display(),
                path.display()
            ),
        }
    }
    decoded
}

/// Replays one target's corpus, which must exist and hold inputs that decode, and its
/// regressions.
fn replay_target(target: &str) {
    let (_, check) = TARGETS
        .into_iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let dir = fuzz_dir().join("corpus").join(target);
    let corpus = files_in(&dir).unwrap_or_else(|| panic!("no corpus at {}", dir.display()));
    assert!(
        !corpus.is_empty(),
        "the corpus at {} is empty",
        dir.display()
    );
    let decoded = replay(target, check, &corpus);
    assert!(
        decoded > 0,
        "no input in {} decodes: the corpus does not exercise the codec",
        dir.display()
    );
    if let Some(crashes) = files_in(&fuzz_dir().join("regressions").join(target)) {
        replay(target, check, &crashes);
    }
}

#[test]
fn frame_decoder_corpus() {
    replay_target("frame_decoder");
}

#[test]
fn method_corpus() {
    replay_target("method");
}

#[test]
fn field_table_corpus() {
    replay_target("field_table");
}

#[test]
fn content_header_corpus() {
    replay_target("content_header");
}

#[test]
fn engine_corpus() {
    replay_target("engine");
}

/// Every directory under `corpus/` and `regressions/` belongs to a target replayed above, so a
/// new target's inputs cannot be committed without being replayed.
#[test]
fn every_input_directory_is_a_known_target() {
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind);
        let Ok(entries) = fs::read_dir(&dir) else {
            assert_eq!(kind, "regressions", "no {}", dir.display());
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if !path.is_dir() {
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                TARGETS.iter().any(|(target, _)| *target == name),
                "{} is not a fuzz target's directory",
                path.display()
            );
        }
    }
}
