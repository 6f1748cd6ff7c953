//! Every committed regression input (`fuzz/regressions/TARGET/*`) run through the entry point of
//! its target, the function the cargo-fuzz binary calls, as gitoxide replays its fuzz crashes:
//! the input must not panic (nor trip the target's oracle) any more. Runs on stable without
//! libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml --no-default-features`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use chunkfs_fuzz::targets::ALL;

#[test]
fn every_regression_input_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    let mut failed = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    dirs.sort_by_key(|e| e.file_name());
    for dir in dirs {
        let name = dir.file_name().to_string_lossy().into_owned();
        let Some(&(_, run)) = ALL.iter().find(|(target, _)| *target == name) else {
            panic!("regressions/{name}: no fuzz target of that name");
        };
        let mut inputs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("regressions/{name}: {e}"))
            .flatten()
            .map(|e| e.path())
            .collect();
        inputs.sort();
        for input in inputs {
            let data = std::fs::read(&input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(input.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no regression input under {}", root.display());
    assert!(failed.is_empty(), "these inputs panic again: {failed:?}");
    eprintln!("{replayed} regression inputs replayed");
}
