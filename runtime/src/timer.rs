//! A timer for the owner tasks' `select!` loops (the pool, each environment, the event queue,
//! each telemetry subscriber): one deadline that may be absent. Below all of them, so that none
//! reaches up into another's module for it.

use std::time::Instant;

/// Sleeps until `at`, or forever when there is nothing to wake for: the timer arm of a
/// `select!` loop.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
