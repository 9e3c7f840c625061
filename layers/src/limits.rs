//! Limits applied to packages and layers; the defaults follow Lambda's quotas.

/// Limits for one extraction (or a whole function: code plus layers share the byte budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total unzipped bytes (Lambda: 250 MB for the function and all its layers together).
    pub max_unzipped_bytes: u64,
    /// Entries in one archive.
    pub max_entries: usize,
    /// Uncompressed/compressed ratio of one entry above which it is taken for a bomb. Text
    /// compresses 5–20×; a ratio past this is not ordinary content.
    pub max_ratio: u64,
    /// Entries smaller than this are not ratio-checked (tiny files compress oddly).
    pub ratio_floor_bytes: u64,
    /// Layers per function (Lambda: 5).
    pub max_layers: usize,
    /// Length of one entry's path, bytes.
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unzipped_bytes: 250 * 1000 * 1000,
            max_entries: 100_000,
            max_ratio: 200,
            ratio_floor_bytes: 1024 * 1024,
            max_layers: 5,
            max_path_bytes: 4096,
        }
    }
}
