//! lamina's integration tests: one binary, real bootstraps over real loopback HTTP.

#[path = "../programs/flat_json.rs"]
#[allow(dead_code, reason = "the tests use the HTTP check only")]
mod flat_json;
#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmarks' part goes unused here")]
mod shared;
mod support;
mod zipcraft;

mod cgroup_delegation;
mod cli;
mod clients;
mod crash_cleanup;
mod events_cli;
mod extension_crate;
mod extensions;
mod first_hour;
mod function_env;
mod host_dirs;
mod init;
mod invoke_errors;
mod layers;
mod logging_controls;
mod managed_runtimes;
mod queue_faults;
mod readme;
mod rootless;
mod runtime_api;
mod sample_events;
mod sandbox_native;
mod sdk_examples;
mod serve;
mod server;
mod shared_queue;
mod sqs;
mod telemetry;
mod templates;
mod wasm;
