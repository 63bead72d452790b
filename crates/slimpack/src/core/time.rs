//! The one clock of an image: every file time and the `created` field come
//! from `SOURCE_DATE_EPOCH`, else a fixed date, so builds repeat.

use anyhow::{anyhow, Result};

/// 1980-01-01T00:00:00Z: the fixed time of every file when SOURCE_DATE_EPOCH
/// is not set (zip-based tools reject earlier dates).
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// `SOURCE_DATE_EPOCH`, else [`DEFAULT_EPOCH`].
pub fn epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// RFC 3339 for a Unix time (UTC).
pub fn rfc3339(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    // Civil from days (Howard Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(DEFAULT_EPOCH), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_827_182), "2026-11-28T00:53:02Z");
    }
}
