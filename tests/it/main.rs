//! lamina's integration tests: one binary, real bootstraps over real loopback HTTP.

#[path = "../shared.rs"]
mod shared;
mod support;
mod zipcraft;

mod cli;
mod clients;
mod invoke_errors;
mod layers;
mod runtime_api;
mod sandbox_native;
mod wasm;
