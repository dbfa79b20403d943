//! Content comparison for `ferry verify`.

use crate::model::TableShape;

/// Row count and an order-independent checksum (sum of 64-bit slices of each
/// row's md5) of one table. Returns `(bigint, text)`.
pub fn checksum(shape: &TableShape) -> String {
    format!(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text \
         FROM {} AS t",
        shape.own_rows()
    )
}
