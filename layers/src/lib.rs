//! Lambda deployment packages and layers. A function's code or a layer is a directory or a ZIP
//! archive; archives are untrusted input. This crate turns them into trees on disk:
//!
//! 1. [`scan`]: read an archive's directory once and collect *every* problem (hostile paths,
//!    links leaving the tree, special files, bombs, corruption), each naming archive and entry.
//! 2. [`extract`]: write a clean archive into a fresh directory, both cores decompressing,
//!    limits counted on the real bytes as they stream.
//! 3. [`Cache`]: extracted trees keyed by the archive's SHA-256, so a second use costs a hash
//!    check; extraction goes to a temporary directory renamed into place only when complete.
//! 4. [`compose`]: an ordered list of layers becomes `/opt`, later layers winning file by file
//!    and directories merging, as a list of overlayfs lower directories or as a merged tree of
//!    hard links into the cache; both give the same view.
//!
//! Synchronous and free of networking: callers run it on a blocking thread.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod compose;
mod extract;
mod limits;
pub mod path;
mod problem;
mod scan;

pub use cache::{Cache, CacheEntry, CacheError, Listed, dir_fingerprint, tree_size};
pub use compose::{Composed, compose};
pub use extract::{ExtractError, extract};
pub use limits::Limits;
pub use problem::{Problem, Problems};
pub use scan::{Entry, EntryKind, Scan, scan};
