//! Lambda deployment packages and layers as lamina reads them: a function's code or a layer is a
//! directory or a ZIP archive, and archives are untrusted input.
//!
//! This first cut extracts a function package into a fresh directory with the path checks every
//! extraction needs (no absolute paths, no `..`, no links, no special files, Lambda's unzipped
//! size limit) and the permission rule runtimes rely on (owner's executable bit kept, setuid,
//! setgid and sticky bits dropped). The layers issue grows this into validation that reports every
//! problem, a content-addressed cache and ordered `/opt` composition.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod extract;

pub use extract::{ExtractError, Limits, extract_zip};
