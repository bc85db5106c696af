//! Versions and epochs (protocol invariant 2).
//!
//! Every committed write batch gets the next value of one monotonic [`Version`] per database.
//! The [`Epoch`] names the database's history: it is made once, when the engine's tables are
//! created, and a client that sees a different epoch than the one its cache came from throws the
//! cache away instead of mixing two histories.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The position of a result in the database's history. `Version(0)` is the empty database.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version after this one.
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The identity of a database's history (32 hex digits, random, made once per database).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub String);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
