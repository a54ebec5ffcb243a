//! Exit codes, assigned in one place.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | runs failed, or an unexpected internal error |
//! | 2    | bad input of any kind: flags, YAML, settings, model folders, unknown run or sweep ids |
//! | 130  | interrupted (Ctrl-C) |

use crate::cli::Error;
use crate::store::StoreError;
use crate::tracking::TrackingError;
use crate::tracking::wandb::WandbError;

/// Success.
pub const OK: i32 = 0;
/// Runs failed, or an unexpected internal error.
pub const FAILED: i32 = 1;
/// Bad input.
pub const BAD_INPUT: i32 = 2;
/// Interrupted by the user.
pub const INTERRUPTED: i32 = 130;

/// The exit code for `err`.
pub fn code(err: &Error) -> i32 {
    match err {
        Error::Config(_) | Error::Usage(_) => BAD_INPUT,
        Error::Store(StoreError::NotFound { .. } | StoreError::SchemaTooNew { .. }) => BAD_INPUT,
        Error::Model(e) if e.is_bad_input() => BAD_INPUT,
        Error::Train(e) if e.is_bad_input() => BAD_INPUT,
        Error::Tracking(TrackingError::Wandb(WandbError::NoApiKey { .. } | WandbError::BadUrl { .. })) => BAD_INPUT,
        Error::Store(_)
        | Error::Model(_)
        | Error::Train(_)
        | Error::Tracking(_)
        | Error::Tensor(_)
        | Error::Output(_) => FAILED,
    }
}
