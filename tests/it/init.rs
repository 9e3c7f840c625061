//! `lamina init` (being written).
