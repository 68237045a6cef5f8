//! Token estimation (being written).
