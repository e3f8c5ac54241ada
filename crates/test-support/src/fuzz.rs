//! The fuzz seeds (`fuzz/seeds/<target>/`, regression inputs included) for the crates' seed-replay
//! tests, and (feature `frames`) the checks the `frame_decoder` fuzz target applies.

use std::path::PathBuf;

#[cfg(feature = "frames")]
pub mod frames;

/// The prefix of a seed that once crashed a target: it must not panic, but need not parse.
pub const REGRESSION_PREFIX: &str = "regression-";

/// One seed file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seed {
    /// The file name, e.g. `regression-empty-sni` or `h2-and-http1`.
    pub name: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl Seed {
    /// Whether the seed is a named regression input rather than a valid one.
    pub fn is_regression(&self) -> bool {
        self.name.starts_with(REGRESSION_PREFIX)
    }
}

/// The directory of the seeds of the fuzz target `target`.
pub fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

/// Every seed of the fuzz target `target`, sorted by name. Panics when the directory cannot be
/// read or holds no seed (a replay test over nothing would pass vacuously).
pub fn seeds(target: &str) -> Vec<Seed> {
    let dir = seed_dir(target);
    let mut out: Vec<Seed> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Seed { name, bytes }
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}
