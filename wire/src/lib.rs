//! The PostgreSQL wire protocol as Ferry speaks it.
//!
//! Pure parsing and encoding live in [`codec`], [`startup`], [`backend`] and
//! [`scram`]; they never touch a socket and are unit-tested on byte slices.
//! [`conn`] is the only module with I/O: a raw connection to a PostgreSQL
//! server that can write a whole pipeline in one flight.

pub mod backend;
pub mod codec;
pub mod conn;
pub mod scram;
pub mod startup;

pub use codec::{FrameError, FrameScanner, Step, MAX_STARTUP_LEN};
pub use conn::{ConnError, ServerConn, ServerError, Target};
