//! The shape of a replicated table, as read from the catalog, and the stable
//! names of the objects Ferry creates for it.

use crate::quote::ident;
use serde::Deserialize;

/// A schema-qualified table name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `"schema"."name"`, for SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }

    /// A stem for the names of Ferry's per-table objects: readable, at most
    /// 40 bytes, and unique per table through a hash of the full name (so two
    /// tables whose sanitised names collide still get distinct objects).
    pub fn stem(&self) -> String {
        let full = format!("{}.{}", self.schema, self.name);
        let mut readable: String = full
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        readable.truncate(30);
        let exact = format!("{}\0{}", self.schema, self.name);
        format!("{readable}_{:08x}", fnv1a(exact.as_bytes()))
    }

    /// The durable outbox on every node: `ferry.o_<stem>`.
    pub fn outbox(&self) -> String {
        format!("ferry.{}", ident(&format!("o_{}", self.stem())))
    }

    /// The per-session batch table: `pg_temp.b_<stem>`.
    pub fn batch_temp(&self) -> String {
        format!("pg_temp.{}", ident(&format!("b_{}", self.stem())))
    }

    /// A capture trigger function for one operation (`ins`, `upd`, `del`, `ref`).
    pub fn capture_fn(&self, op: &str) -> String {
        format!("ferry.{}", ident(&format!("c_{}_{op}", self.stem())))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// 32-bit FNV-1a: a stable, dependency-free hash for object names.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// A column as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Column {
    /// The attribute number: names the column's outbox column (`a<attnum>`),
    /// which keeps it through renames.
    pub attnum: i16,
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `numeric(10,2)`.
    #[serde(rename = "type")]
    pub type_sql: String,
    /// A stored generated column: recomputed on each node, never shipped.
    pub generated: bool,
    /// An identity column: inserted with OVERRIDING SYSTEM VALUE.
    pub identity: bool,
}

/// Everything Ferry needs to know to capture, ship and apply one table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "ShapeJson")]
pub struct TableShape {
    pub table: TableName,
    pub columns: Vec<Column>,
    /// The replication key: the primary key, else the narrowest unique index
    /// on not-null columns. `None`: inserts replicate, updates and deletes
    /// are refused.
    pub key: Option<Vec<String>>,
    /// A partitioned table: its rows live in its partitions, which
    /// statements reach through it. Any other table is read and changed
    /// `ONLY` itself: an inheritance parent's statements would otherwise
    /// reach its children's rows, which replicate as tables of their own.
    pub partitioned: bool,
}

/// The JSON form `ferry.table_shape` returns.
#[derive(Deserialize)]
struct ShapeJson {
    schema: String,
    name: String,
    columns: Vec<Column>,
    key: Option<Vec<String>>,
    /// Absent in shapes recorded by an older install.
    #[serde(default)]
    partitioned: bool,
}

impl From<ShapeJson> for TableShape {
    fn from(j: ShapeJson) -> Self {
        Self {
            table: TableName::new(j.schema, j.name),
            columns: j.columns,
            key: j.key,
            partitioned: j.partitioned,
        }
    }
}

impl TableShape {
    /// The table's own rows, for statements that read or delete them:
    /// `ONLY "schema"."name"`, or the partitioned table itself.
    pub fn own_rows(&self) -> String {
        if self.partitioned {
            self.table.quoted()
        } else {
            format!("ONLY {}", self.table.quoted())
        }
    }

    /// Parses the JSON `ferry.table_shape` returns (and the DDL log records).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The outbox column holding a column's values.
    pub fn outbox_column(c: &Column) -> String {
        ident(&format!("a{}", c.attnum))
    }

    /// The outbox columns of the shipped columns, in order.
    pub fn outbox_shipped(&self) -> String {
        self.shipped()
            .map(Self::outbox_column)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The outbox columns of the key, in key order (columns of the key
    /// missing from the shape are skipped).
    pub fn outbox_key(&self) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(
            key.iter()
                .filter_map(|k| self.columns.iter().find(|c| &c.name == k))
                .map(Self::outbox_column)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// The columns that travel in batches (all but generated ones).
    pub fn shipped(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    /// Names of the shipped columns.
    pub fn shipped_names(&self) -> Vec<&str> {
        self.shipped().map(|c| c.name.as_str()).collect()
    }

    /// Whether an INSERT needs OVERRIDING SYSTEM VALUE.
    pub fn has_identity(&self) -> bool {
        self.columns.iter().any(|c| c.identity)
    }

    /// The column list of the outbox and batch tables after their metadata.
    pub fn column_defs(&self) -> String {
        self.shipped()
            .map(|c| format!("{} {}", ident(&c.name), c.type_sql))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
pub(crate) fn sample() -> TableShape {
    TableShape {
        table: TableName::new("public", "Order Lines"),
        columns: vec![
            Column {
                attnum: 1,
                name: "id".into(),
                type_sql: "bigint".into(),
                generated: false,
                identity: true,
            },
            Column {
                attnum: 2,
                name: "order_id".into(),
                type_sql: "integer".into(),
                generated: false,
                identity: false,
            },
            Column {
                attnum: 3,
                name: "qty".into(),
                type_sql: "numeric(10,2)".into(),
                generated: false,
                identity: false,
            },
            Column {
                attnum: 4,
                name: "total".into(),
                type_sql: "numeric".into(),
                generated: true,
                identity: false,
            },
        ],
        key: Some(vec!["id".into(), "order_id".into()]),
        partitioned: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_bounded_and_distinct() {
        let a = TableName::new("public", "a.b");
        let b = TableName::new("public.a", "b");
        assert_ne!(a.stem(), b.stem());
        let long = TableName::new("s", "x".repeat(63));
        assert!(long.outbox().len() < 63 + 8);
        assert_eq!(sample().table.quoted(), "\"public\".\"Order Lines\"");
    }

    #[test]
    fn shapes_read_from_the_catalog_json() {
        let s = TableShape::from_json(
            r#"{"schema": "public", "name": "t", "key": ["id"], "columns": [
                {"attnum": 1, "name": "id", "type": "bigint", "generated": false, "identity": true},
                {"attnum": 3, "name": "v", "type": "text", "generated": false, "identity": false}]}"#,
        )
        .unwrap();
        assert_eq!(s.table, TableName::new("public", "t"));
        assert_eq!(s.outbox_shipped(), "\"a1\", \"a3\"");
        assert_eq!(s.outbox_key().as_deref(), Some("\"a1\""));
        assert!(TableShape::from_json(r#"{"schema": "s"}"#).is_err());
    }

    #[test]
    fn generated_columns_do_not_travel() {
        assert_eq!(sample().shipped_names(), vec!["id", "order_id", "qty"]);
    }
}
