//! Replays the fuzz seeds (`fuzz/seeds/path/`, regression inputs included) through the normaliser:
//! none may panic, and the named valid seeds must normalise to `/admin/`.

use std::path::PathBuf;

#[test]
fn path_seeds_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/path");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&path).expect("seed file");
        let text = String::from_utf8_lossy(&bytes);
        let result = bulkhead_pathnorm::normalize_path(&text);
        if !name.starts_with("regression-") {
            assert_eq!(result.as_deref(), Ok("/admin/"), "{name}");
        }
        seen += 1;
    }
    assert!(seen > 0, "no seeds in {}", dir.display());
}
