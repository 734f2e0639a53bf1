//! Wall-clock times in the forms the simulator answers: Unix milliseconds and
//! `2020-06-11T06:12:48Z`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::queue::civil_from_days;

/// Now as Unix milliseconds.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2020-06-11T06:12:48Z` for a Unix time in seconds.
pub(crate) fn iso8601(secs: u64) -> String {
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// The current time as `2020-06-11T06:12:48Z`.
pub(crate) fn now_iso() -> String {
    iso8601(unix_ms(SystemTime::now()) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_591_855_968), "2020-06-11T06:12:48Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
