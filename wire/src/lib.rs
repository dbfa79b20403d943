//! The PostgreSQL wire protocol as Ferry speaks it.
//!
//! Pure parsing and encoding live in [`codec`], [`startup`], [`backend`] and
//! [`scram`]; they never touch a socket and are unit-tested on byte slices.
//! [`conn`] and [`stream`] are the only modules with I/O: a raw connection to
//! a PostgreSQL server (over TCP, TLS or a Unix socket) that can write a whole
//! pipeline in one flight; [`tls`] holds the TLS settings a node's DSN asks for.

pub mod backend;
pub mod codec;
pub mod conn;
pub mod error_response;
pub mod scram;
pub mod startup;
pub mod stream;
pub mod tag;
pub mod tls;

pub use codec::{FrameError, FrameScanner, Step, MAX_STARTUP_LEN};
pub use conn::{ConnError, Login, ServerConn, ServerError, Target};
pub use stream::{Address, Stream};
pub use tag::TransactionStatus;
