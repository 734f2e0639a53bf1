//! Build and install jobs.

/// A job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: String,
}
