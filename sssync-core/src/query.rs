//! Query keys.
//!
//! A subscription is identified by the query's name and the *canonical* encoding of its
//! arguments, so that equal arguments give equal keys whatever field order or whitespace a client
//! used (protocol invariant 1). The canonical form is compact JSON with object keys sorted
//! (`serde_json`'s map is ordered by key), numbers and strings as `serde_json` writes them
//! (parsed exactly, with serde_json's `float_roundtrip`, so that the canonical form of a number
//! is a fixed point: the same number written two ways gives one key).

use serde::Serialize;
use std::fmt;

/// The longest canonical args encoding a query key may carry, in bytes (SPEC 2.12: bounded args).
pub const MAX_ARGS_BYTES: usize = 4 * 1024;

/// The longest query name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Why a query key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// The args are not valid JSON, or do not serialize to JSON.
    #[error("query args are not valid JSON: {0}")]
    Malformed(String),
    /// The canonical args are longer than [`MAX_ARGS_BYTES`].
    #[error("query args are {len} bytes, more than the limit of {MAX_ARGS_BYTES}")]
    TooLarge {
        /// The canonical length.
        len: usize,
    },
    /// The query name is empty, too long, or has characters other than ASCII letters, digits,
    /// `_`, `-` and `.`.
    #[error("invalid query name {0:?}: use 1 to 128 ASCII letters, digits, '_', '-' or '.'")]
    BadName(String),
}

/// A query's name plus the canonical encoding of its args.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryKey {
    name: String,
    args: String,
    /// On the server, for a query whose result depends on who reads it: the identity it is
    /// read for (so that two identities never share a result). Never on the wire.
    scope: Option<Scope>,
}

/// The identity a server-side key is read for (`None` inside: anonymous).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Scope(pub(crate) Option<String>);

impl QueryKey {
    /// The key of query `name` called with typed `args`.
    pub fn new(name: &str, args: &impl Serialize) -> Result<Self, ArgsError> {
        let value = serde_json::to_value(args).map_err(|e| ArgsError::Malformed(e.to_string()))?;
        Self::from_value(name, &value)
    }

    /// The key of query `name` called with args given as JSON text (as a client sends them).
    pub fn from_json(name: &str, args_json: &str) -> Result<Self, ArgsError> {
        if args_json.len() > 4 * MAX_ARGS_BYTES {
            // Refuse to even parse something this large.
            return Err(ArgsError::TooLarge {
                len: args_json.len(),
            });
        }
        let value: serde_json::Value =
            serde_json::from_str(args_json).map_err(|e| ArgsError::Malformed(e.to_string()))?;
        Self::from_value(name, &value)
    }

    fn from_value(name: &str, value: &serde_json::Value) -> Result<Self, ArgsError> {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            return Err(ArgsError::BadName(name.to_owned()));
        }
        // `Value`'s maps are key-ordered, so this writes the canonical form.
        let args = value.to_string();
        if args.len() > MAX_ARGS_BYTES {
            return Err(ArgsError::TooLarge { len: args.len() });
        }
        Ok(Self {
            name: name.to_owned(),
            args,
            scope: None,
        })
    }

    /// This key, read for one identity (`None`: anonymous).
    #[cfg(feature = "server")]
    pub(crate) fn scoped(mut self, who: Option<&str>) -> QueryKey {
        self.scope = Some(Scope(who.map(str::to_owned)));
        self
    }

    /// The identity this key is read for, when its result depends on it.
    #[cfg(feature = "server")]
    pub(crate) fn scope(&self) -> Option<Option<&str>> {
        self.scope.as_ref().map(|s| s.0.as_deref())
    }

    /// The query's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The canonical JSON encoding of the args.
    pub fn args_json(&self) -> &str {
        &self.args
    }
}

impl fmt::Display for QueryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Args {
        list_id: String,
        limit: u32,
    }

    #[test]
    fn invariant_1_query_key_ignores_field_order_and_whitespace() {
        let a = QueryKey::from_json("todos", r#"{"list_id":"a","limit":10}"#).unwrap();
        let b = QueryKey::from_json("todos", "{ \"limit\" : 10,\n \"list_id\": \"a\" }").unwrap();
        let typed = QueryKey::new(
            "todos",
            &Args {
                list_id: "a".into(),
                limit: 10,
            },
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, typed);
        assert_eq!(a.args_json(), r#"{"limit":10,"list_id":"a"}"#);
    }

    #[test]
    fn invariant_1_the_same_number_written_two_ways_gives_one_key() {
        // Found by the query_key fuzz target: without exact float parsing, "99e29" became
        // 9.9e+30, which parsed again as 9.899999999999999e+30 (another key for the same args).
        let a = QueryKey::from_json("q", "99e29").unwrap();
        let b = QueryKey::from_json("q", a.args_json()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, QueryKey::from_json("q", "9.9e30").unwrap());
    }

    #[test]
    fn invariant_1_different_args_or_names_give_different_keys() {
        let a = QueryKey::from_json("todos", r#"{"list_id":"a"}"#).unwrap();
        assert_ne!(
            a,
            QueryKey::from_json("todos", r#"{"list_id":"b"}"#).unwrap()
        );
        assert_ne!(
            a,
            QueryKey::from_json("lists", r#"{"list_id":"a"}"#).unwrap()
        );
        // Nested objects are canonical too.
        assert_eq!(
            QueryKey::from_json("q", r#"{"f":{"b":1,"a":[2,{"y":1,"x":0}]}}"#).unwrap(),
            QueryKey::from_json("q", r#"{"f":{"a":[2,{"x":0,"y":1}],"b":1}}"#).unwrap()
        );
    }

    #[test]
    fn bad_args_and_names_get_typed_errors() {
        assert!(matches!(
            QueryKey::from_json("todos", "{not json"),
            Err(ArgsError::Malformed(_))
        ));
        let big = format!(r#"{{"s":"{}"}}"#, "x".repeat(MAX_ARGS_BYTES));
        assert!(matches!(
            QueryKey::from_json("todos", &big),
            Err(ArgsError::TooLarge { .. })
        ));
        assert!(matches!(
            QueryKey::from_json("", "{}"),
            Err(ArgsError::BadName(_))
        ));
        assert!(matches!(
            QueryKey::from_json("drop table;", "{}"),
            Err(ArgsError::BadName(_))
        ));
    }
}
