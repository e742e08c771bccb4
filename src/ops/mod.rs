//! The operations surface: what operators run and read besides the sink.

pub mod check;
pub mod health;
pub mod http;
pub mod produce;
pub mod telemetry;
pub mod topics;
