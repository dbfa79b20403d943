//! Ferry, the PostgreSQL replication proxy: the pieces the `ferry` binary
//! assembles. The replication path is in `ferry-batcher`, the protocol in
//! `ferry-wire`, the generated SQL in `ferry-sql`.

pub mod app;
pub mod certs;
pub mod config;
pub mod frontend;
pub mod operations;
pub mod status;
