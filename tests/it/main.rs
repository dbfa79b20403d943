//! Ferry's integration tests, one module per area, in one binary so that
//! the suite links once. Every test starts the real PostgreSQL servers it
//! needs (see the harness, `ferry-testkit`) and the real `ferry` binary
//! (`CARGO_BIN_EXE_ferry`, which kill -9 tests need).

mod access;
mod bypass;
mod campaign;
mod clients;
mod commands;
mod ddl;
mod differential;
mod divergence;
mod failover;
mod faults;
mod hold;
mod limits;
mod outage;
mod protocol;
mod reads;
mod replication;
mod retention;
mod scale;
mod security;
mod sequences;
mod suspend;
mod sync;
mod tls;
