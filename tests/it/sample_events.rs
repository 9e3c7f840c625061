//! Sample events (being written).
