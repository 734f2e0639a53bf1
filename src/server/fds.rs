//! The process's open-file limit, which bounds the connections a listener can really hold.

/// File descriptors kept for everything but client connections: Redis connections, the
/// upstream HTTP pool, log files.
#[cfg(unix)]
const RESERVE: libc::rlim_t = 256;

/// Raises the soft limit on open files towards the hard one so that `connections` client
/// connections and a reserve fit, and warns when they still do not: past the limit,
/// `accept` fails instead of answering 503, and Redis and upstream connections fail too.
#[cfg(unix)]
pub(super) fn ensure(connections: usize) {
    let wanted = libc::rlim_t::try_from(connections)
        .unwrap_or(libc::rlim_t::MAX)
        .saturating_add(RESERVE);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let current = limit.rlim_cur;
    if current >= wanted {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    let now = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        current
    };
    if now < wanted {
        tracing::warn!(
            open_files = now,
            max_connections = connections,
            "the open-file limit is below server.max_connections plus a reserve of {RESERVE}: raise it (ulimit -n) or lower server.max_connections"
        );
    }
}

/// Elsewhere the limit is left as it is.
#[cfg(not(unix))]
pub(super) fn ensure(_connections: usize) {}
