//! The seed's rules, pure: no I/O, no async, no database or actor types. Parsing of
//! FreeSWITCH CDRs and of the HTTP bodies that carry them, normalization, task rules and
//! outcomes. Tests here read the shared corpus; the code never does.

pub mod billing;
pub mod calls;
pub mod cdr;
pub mod intake;
pub mod mapping;
pub mod ncdr;
pub mod normalize;
pub mod orgs;
pub mod outcome;
pub mod percent;
pub mod rating;
pub mod shard;
pub mod ship;
pub mod submission;
pub mod tasks;

/// Where the shared CDR corpus lives (tests only): `CDRMUNCH_CORPUS_DIR`, then `../shared/corpus`
/// beside the crate.
#[cfg(test)]
pub(crate) fn corpus_dir() -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    if let Some(dir) = std::env::var_os("CDRMUNCH_CORPUS_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// Reads `corpus_dir()/sub/name`, failing loudly: a missing corpus must not pass silently.
#[cfg(test)]
pub(crate) fn corpus_file(sub: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir().join(sub).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("corpus file {} unreadable: {e}", path.display()))
}

/// All `(name, bytes)` of one corpus subdirectory (`xml` or `json`), sorted by name.
#[cfg(test)]
pub(crate) fn corpus_files(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(sub);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus dir {} unreadable: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "corpus dir {} is empty", dir.display());
    names
        .into_iter()
        .map(|n| {
            let b = corpus_file(sub, &n);
            (n, b)
        })
        .collect()
}
