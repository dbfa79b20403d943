//! All SQL text Ferry generates lives here.
//!
//! Identifiers are always quoted with [`quote::ident`]; values (snapshots,
//! batch ids, node names) are always bind parameters, never formatted into
//! the text. Nothing here does I/O, so every statement is unit-testable.
//!
//! [`classify`] goes the other way: it tells what a client's statement may
//! do (read, write, transaction control, session state), and
//! [`session_effect`] what it leaves in its server session ([`set_config`]:
//! the settings a `set_config()` call makes).

pub mod apply;
pub mod batch;
pub mod capture;
pub mod catalog;
pub mod classify;
pub mod cluster;
pub mod compact;
pub mod ddl;
pub mod forbidden;
pub mod guard;
pub mod model;
pub mod outbox_index;
pub mod quote;
pub mod resync;
pub mod schema;
pub mod sequences;
pub mod session_effect;
pub mod set_config;
pub mod suspend;
pub mod verify;

pub use model::{Column, TableName, TableShape};
