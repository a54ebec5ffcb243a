//! Exit codes, decided in one place.
//!
//! | code | [`Kind`] | meaning |
//! |------|----------|---------|
//! | 0    | `Ok`          | success |
//! | 1    | `Failed`      | runs failed, or an unexpected internal error |
//! | 2    | `BadInput`    | bad input of any kind: flags, YAML, settings, model folders, images, unknown run or sweep ids |
//! | 130  | `Interrupted` | interrupted (Ctrl-C, SIGTERM) |
//!
//! Layers say what kind of end they had (their errors' `is_bad_input`, a training outcome, a
//! sweep summary); the command line turns that into a [`Kind`], and only this module knows the
//! numbers. It imports nothing from the crate, so every layer may use it: the scheduler reads
//! the kind back from a training process's exit code.

/// How a command (or a training process) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Success.
    Ok,
    /// Runs failed, or an unexpected internal error.
    Failed,
    /// Bad input: retrying with the same input fails the same way.
    BadInput,
    /// Interrupted by the user (or asked to stop).
    Interrupted,
}

impl Kind {
    /// The process exit code.
    pub const fn code(self) -> i32 {
        match self {
            Kind::Ok => 0,
            Kind::Failed => 1,
            Kind::BadInput => 2,
            Kind::Interrupted => 130,
        }
    }

    /// The kind of end a process exit code stands for (any other code, or death by a signal,
    /// is a failure).
    pub const fn of_code(code: i32) -> Kind {
        match code {
            0 => Kind::Ok,
            2 => Kind::BadInput,
            130 => Kind::Interrupted,
            _ => Kind::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn codes_round_trip() {
        for kind in [Kind::Ok, Kind::Failed, Kind::BadInput, Kind::Interrupted] {
            assert_eq!(Kind::of_code(kind.code()), kind);
        }
        assert_eq!(Kind::of_code(137), Kind::Failed, "killed by SIGKILL");
    }
}
