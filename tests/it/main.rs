//! lamina's integration tests: one binary, real bootstraps over real loopback HTTP.

mod support;

mod cli;
mod clients;
mod invoke_errors;
mod runtime_api;
