//! Build jobs (create/update an app from an upload) and install jobs (install an app's
//! requirements): what a job holds and where it stands.
//!
//! A job is `queued`, then `working`, then finished (`completed` or `failed`). It advances one
//! step per status poll or with time (`working` after [`WORKING_AFTER`], finished after
//! [`FINISHED_AFTER`]), whichever is further: a client polling every second sees the outcome on
//! its first poll, and a fast poller sees every state. The outcome of a build is decided when
//! the job is created (the package is validated then), but takes effect only when the job
//! finishes: only then does the app exist or change.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use super::clock::{iso8601, unix_ms};
use super::packages::{InvalidPackage, Package};

/// Time after which a queued job is working.
pub(crate) const WORKING_AFTER: Duration = Duration::from_millis(100);
/// Time after which a job is finished.
pub(crate) const FINISHED_AFTER: Duration = Duration::from_millis(250);
/// The `retry_in` hint given to pollers, in seconds.
pub(crate) const RETRY_IN: u64 = 1;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    Queued,
    Working,
    Finished,
}

/// What a job does.
#[derive(Debug, Clone)]
pub(crate) enum JobKind {
    /// Build a new app (`target: None`) or a new version of an app.
    Build {
        target: Option<u64>,
        /// The package validated when the job was created, or why it is invalid.
        outcome: Result<Box<Package>, InvalidPackage>,
        name: Option<String>,
        short_description: Option<String>,
        /// The app built, once completed.
        app_id: Option<u64>,
    },
    /// Install the requirements of an installation.
    Install { installation_id: u64 },
}

/// A build or install job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: String,
    pub created: Instant,
    pub polls: u32,
    pub kind: JobKind,
    /// How the job ended, once finished.
    pub result: Option<Result<Completed, JobFailure>>,
}

impl Job {
    /// A new job with a random 32-hex-digit id, like Zendesk's.
    pub(crate) fn new(kind: JobKind) -> Job {
        Job {
            id: uuid::Uuid::now_v7().simple().to_string(),
            created: Instant::now(),
            polls: 0,
            kind,
            result: None,
        }
    }

    /// The stage by time alone.
    pub(crate) fn time_stage(&self, now: Instant) -> Stage {
        let age = now.saturating_duration_since(self.created);
        if age >= FINISHED_AFTER {
            Stage::Finished
        } else if age >= WORKING_AFTER {
            Stage::Working
        } else {
            Stage::Queued
        }
    }

    /// The stage by time and by the polls seen so far.
    pub(crate) fn stage(&self, now: Instant) -> Stage {
        if self.result.is_some() {
            return Stage::Finished;
        }
        let by_polls = match self.polls {
            0 => Stage::Queued,
            1 => Stage::Working,
            _ => Stage::Finished,
        };
        by_polls.max(self.time_stage(now))
    }
}

/// When a job completed; shown as its `message`, `Completed at 2013-05-06 15:02:40 +0000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completed {
    at_unix_secs: u64,
}

impl Completed {
    /// Completed now.
    pub(crate) fn now() -> Completed {
        Completed {
            at_unix_secs: unix_ms(SystemTime::now()) / 1000,
        }
    }
}

impl fmt::Display for Completed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let iso = iso8601(self.at_unix_secs);
        // 2013-05-06T15:02:40Z → 2013-05-06 15:02:40 +0000
        write!(
            f,
            "Completed at {} +0000",
            iso.trim_end_matches('Z').replace('T', " ")
        )
    }
}

/// Why a job failed; shown as its `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JobFailure {
    /// The uploaded package is not a valid app.
    #[error(transparent)]
    InvalidPackage(#[from] InvalidPackage),
    /// The app a build was to update was deleted before the build finished.
    #[error("The app to update no longer exists")]
    AppToUpdateGone,
    /// The installation was removed before its requirements were installed.
    #[error("The installation was removed before its requirements were installed")]
    InstallationRemoved,
    /// The installation's app was deleted before its requirements were installed.
    #[error("The app was deleted before its requirements were installed")]
    AppDeleted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_and_time_both_advance() {
        let mut job = Job::new(JobKind::Install { installation_id: 1 });
        let now = job.created;
        assert_eq!(job.stage(now), Stage::Queued);
        job.polls = 1;
        assert_eq!(job.stage(now), Stage::Working);
        job.polls = 2;
        assert_eq!(job.stage(now), Stage::Finished);
        job.polls = 0;
        assert_eq!(job.stage(now + WORKING_AFTER), Stage::Working);
        assert_eq!(job.stage(now + FINISHED_AFTER), Stage::Finished);
        assert_eq!(job.id.len(), 32);
    }

    #[test]
    fn completed_message_shape() {
        let m = Completed::now().to_string();
        assert!(m.starts_with("Completed at 2"), "{m}");
        assert!(m.ends_with(" +0000"), "{m}");
        let m = Completed {
            at_unix_secs: 1_367_852_560,
        }
        .to_string();
        assert_eq!(m, "Completed at 2013-05-06 15:02:40 +0000");
    }
}
