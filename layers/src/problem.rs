//! What is wrong with a package or layer. Problems are collected, not returned one at a time:
//! a user fixing an archive wants the whole list.

use std::fmt;
use std::path::PathBuf;

/// One problem, naming the archive and, where there is one, the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The archive or directory.
    pub archive: PathBuf,
    /// The entry's name as stored (lossy UTF-8), when the problem is one entry's.
    pub entry: Option<String>,
    /// What is wrong, lower case, no trailing period.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some(entry) => write!(
                f,
                "{}: entry {entry:?}: {}",
                self.archive.display(),
                self.reason
            ),
            None => write!(f, "{}: {}", self.archive.display(), self.reason),
        }
    }
}

/// Every problem found, in archive order. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems:", all.len())?;
                for p in all {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}
