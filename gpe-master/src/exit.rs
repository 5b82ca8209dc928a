//! Why a worker exited: a pure decision from its wait status and what the master knew of it,
//! counted as `gunicorn_master_worker_exits_total{reason}`.

use nix::sys::signal::Signal;

/// gunicorn's WORKER_BOOT_ERROR and APP_LOAD_ERROR: the master halts instead of respawning.
pub(crate) const BOOT_ERRORS: [i32; 2] = [3, 4];

/// How a worker ended, from `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(Signal),
}

/// What the master knew of the worker when it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Known {
    /// The master told it to stop (TERM or QUIT).
    pub(crate) told_to_stop: bool,
    /// It asked for a replacement at `--max-requests`.
    pub(crate) retiring: bool,
    /// The master sent it SIGABRT for a heartbeat timeout.
    pub(crate) aborted: bool,
    /// The master SIGKILLed it at `--graceful-timeout`.
    pub(crate) killed_at_deadline: bool,
}

/// Why a worker exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// The master asked (TERM, QUIT), and it stopped.
    Graceful,
    /// It left for `--max-requests`: exit 0 unasked, or after asking for a replacement.
    MaxRequests,
    /// Any other exit code, or a signal nobody here sent.
    Crash,
    /// After the master's SIGABRT (heartbeat timeout).
    Timeout,
    /// Told to stop, still there `--graceful-timeout` later: SIGKILLed by the master.
    GracefulTimeout,
    /// SIGKILL from outside ("perhaps out of memory?").
    Killed,
    /// Exit code 3 or 4 while not told to stop: the master halts with that code.
    BootError(i32),
}

impl ExitReason {
    /// The `reason` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ExitReason::Graceful => "graceful",
            ExitReason::MaxRequests => "max_requests",
            ExitReason::Crash => "crash",
            ExitReason::Timeout => "timeout",
            ExitReason::GracefulTimeout => "graceful_timeout",
            ExitReason::Killed => "killed",
            ExitReason::BootError(_) => "boot_error",
        }
    }

    /// Every label value, for series that exist from the start.
    pub(crate) const LABELS: [&'static str; 7] = [
        "graceful",
        "max_requests",
        "crash",
        "timeout",
        "graceful_timeout",
        "killed",
        "boot_error",
    ];
}

/// Why a worker that ended with `status` exited, given what the master knew of it.
pub(crate) fn classify(status: Status, known: Known) -> ExitReason {
    match status {
        Status::Exited(c) if BOOT_ERRORS.contains(&c) && !known.told_to_stop => {
            ExitReason::BootError(c)
        }
        Status::Exited(0) if known.retiring => ExitReason::MaxRequests,
        Status::Exited(0) if known.told_to_stop => ExitReason::Graceful,
        Status::Exited(0) => ExitReason::MaxRequests,
        Status::Exited(_) => ExitReason::Crash,
        Status::Signaled(_) if known.aborted => ExitReason::Timeout,
        Status::Signaled(Signal::SIGKILL) if known.killed_at_deadline => {
            ExitReason::GracefulTimeout
        }
        Status::Signaled(Signal::SIGKILL) => ExitReason::Killed,
        Status::Signaled(Signal::SIGTERM | Signal::SIGQUIT | Signal::SIGINT)
            if known.told_to_stop =>
        {
            ExitReason::Graceful
        }
        Status::Signaled(_) => ExitReason::Crash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLD: Known = Known {
        told_to_stop: true,
        retiring: false,
        aborted: false,
        killed_at_deadline: false,
    };

    #[test]
    fn exits_of_workers_the_master_asked_to_stop() {
        assert_eq!(classify(Status::Exited(0), TOLD), ExitReason::Graceful);
        assert_eq!(
            classify(Status::Signaled(Signal::SIGTERM), TOLD),
            ExitReason::Graceful
        );
        assert_eq!(classify(Status::Exited(1), TOLD), ExitReason::Crash);
        // A boot error while stopping is no reason to halt.
        assert_eq!(classify(Status::Exited(3), TOLD), ExitReason::Crash);
        let killed = Known {
            killed_at_deadline: true,
            ..TOLD
        };
        assert_eq!(
            classify(Status::Signaled(Signal::SIGKILL), killed),
            ExitReason::GracefulTimeout
        );
    }

    #[test]
    fn exits_nobody_asked_for() {
        let none = Known::default();
        assert_eq!(classify(Status::Exited(0), none), ExitReason::MaxRequests);
        assert_eq!(classify(Status::Exited(2), none), ExitReason::Crash);
        assert_eq!(classify(Status::Exited(3), none), ExitReason::BootError(3));
        assert_eq!(classify(Status::Exited(4), none), ExitReason::BootError(4));
        assert_eq!(
            classify(Status::Signaled(Signal::SIGKILL), none),
            ExitReason::Killed
        );
        assert_eq!(
            classify(Status::Signaled(Signal::SIGSEGV), none),
            ExitReason::Crash
        );
        // A TERM from outside is not one the master sent.
        assert_eq!(
            classify(Status::Signaled(Signal::SIGTERM), none),
            ExitReason::Crash
        );
    }

    #[test]
    fn timeouts_and_handovers() {
        let aborted = Known {
            aborted: true,
            ..Known::default()
        };
        for sig in [Signal::SIGABRT, Signal::SIGKILL] {
            assert_eq!(
                classify(Status::Signaled(sig), aborted),
                ExitReason::Timeout
            );
        }
        // Asked for a replacement, then TERMed by the master once it was up.
        let handed_over = Known {
            retiring: true,
            ..TOLD
        };
        assert_eq!(
            classify(Status::Exited(0), handed_over),
            ExitReason::MaxRequests
        );
    }

    #[test]
    fn every_reason_has_a_listed_label() {
        for r in [
            ExitReason::Graceful,
            ExitReason::MaxRequests,
            ExitReason::Crash,
            ExitReason::Timeout,
            ExitReason::GracefulTimeout,
            ExitReason::Killed,
            ExitReason::BootError(3),
        ] {
            assert!(ExitReason::LABELS.contains(&r.label()), "{r:?}");
        }
    }
}
