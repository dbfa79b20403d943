//! A node's part in the cluster, typed: parsed once where a node's record
//! is read, never compared as text.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a node is in a topology, or recorded itself as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
    /// Out of the cluster until resynchronised (never recorded by a node
    /// itself: its fence epoch says it).
    Fenced,
}

impl Role {
    /// The word `/status` and the node's record use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Replica => "replica",
            Self::Fenced => "fenced",
        }
    }

    /// The role a recorded word names.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "master" => Some(Self::Master),
            "replica" => Some(Self::Replica),
            "fenced" => Some(Self::Fenced),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_reads_back_as_written() {
        for r in [Role::Master, Role::Replica, Role::Fenced] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("primary"), None);
    }
}
