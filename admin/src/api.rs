//! The bodies of the admin endpoint's requests, typed: the routes read
//! them and the `ferry` commands write them, so both ends agree by
//! construction.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `POST /nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNode {
    pub name: String,
    pub dsn: String,
    /// Lower is preferred as master; 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

impl AddNode {
    pub const EXPECTED: &'static str =
        "expected {\"name\": \"d\", \"dsn\": \"postgresql://...\", \"priority\": 4}";
    /// The priority of a node added without one.
    pub const DEFAULT_PRIORITY: i64 = 100;
}

/// `POST /force-master`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceMaster {
    pub node: String,
}

impl ForceMaster {
    pub const EXPECTED: &'static str = "expected {\"node\": \"name\"}";
}

/// `POST /switchover` (the body may also be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// The replica to promote; the best one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl Switchover {
    pub const EXPECTED: &'static str = "expected no body or {\"to\": \"node\"}";
}

/// `POST /replicas/{name}/suspend`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspend {
    /// An RFC 3339 instant.
    pub at: String,
}

impl Suspend {
    pub const EXPECTED: &'static str = "expected {\"at\": \"<RFC 3339 time>\"}";
}

/// `POST /suspend`: a consistency group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendGroup {
    pub replicas: Vec<String>,
    /// An RFC 3339 instant.
    pub at: String,
}

impl SuspendGroup {
    pub const EXPECTED: &'static str =
        "expected {\"replicas\": [\"name\", ...], \"at\": \"<RFC 3339 time>\"}";
}

/// `POST /nodes/{name}/repair` (the body may also be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// One table (`schema.name`) rewritten whole; the ranges found
    /// different when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl Repair {
    pub const EXPECTED: &'static str = "expected {\"table\": \"schema.name\"}";
}

/// A request body the endpoint cannot read: what it expected, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unreadable(pub String);

/// A request body: `T` as the bytes hold it, its default for an empty body
/// when `empty` is given, or why not.
pub(crate) fn parse<T: DeserializeOwned>(
    body: &[u8],
    empty: Option<T>,
    expected: &str,
) -> Result<T, Unreadable> {
    if body.iter().all(u8::is_ascii_whitespace) {
        if let Some(e) = empty {
            return Ok(e);
        }
    }
    serde_json::from_slice(body).map_err(|e| Unreadable(format!("{expected}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_written_by_the_commands_are_read_by_the_routes() {
        let add = AddNode {
            name: "d".into(),
            dsn: "host=x dbname=app".into(),
            priority: None,
        };
        let text = serde_json::to_vec(&add).unwrap();
        assert_eq!(parse(&text, None, AddNode::EXPECTED), Ok(add));
        assert_eq!(
            parse(b"", Some(Switchover::default()), Switchover::EXPECTED),
            Ok(Switchover::default())
        );
        let refused = parse::<ForceMaster>(b"{\"name\": 1}", None, ForceMaster::EXPECTED);
        assert!(refused.is_err_and(|e| e.0.starts_with(ForceMaster::EXPECTED)));
        assert!(parse::<Suspend>(b"", None, Suspend::EXPECTED).is_err());
    }
}
