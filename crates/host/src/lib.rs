//! A Spin-compatible local host on wasmtime.
//!
//! It reads the app's `spin.toml`, serves its HTTP routes with Spin's routing
//! rules, runs its cron triggers, and implements the Spin interfaces the
//! components import (Postgres, Redis, variables, outbound HTTP) against real servers, with
//! Spin's semantics (see each module). It exists because Spin cannot be
//! installed where this project is built; production runs on Spin itself.

pub mod bindings;
pub mod cron_trigger;
pub mod http_client;
pub mod http_trigger;
pub mod identity;
pub mod manifest;
pub mod migrate;
pub mod outbound;
pub mod pg;
pub mod redis_host;
pub mod routes;
pub mod runtime;
pub mod state;
pub mod token;
pub mod variables;
pub mod variables_host;
