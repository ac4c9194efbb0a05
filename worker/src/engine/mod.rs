//! engine pool (in progress)
