//! hologram._core (placeholder)
