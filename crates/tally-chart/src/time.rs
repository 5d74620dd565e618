//! Bucket widths and UTC time labels (no clock, no time-zone database: UTC only).

const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;

/// The "nice" widths, smallest first; past the last one, whole weeks are used.
const NICE: [u64; 18] = [
    SEC,
    2 * SEC,
    5 * SEC,
    10 * SEC,
    15 * SEC,
    30 * SEC,
    MIN,
    2 * MIN,
    5 * MIN,
    10 * MIN,
    15 * MIN,
    30 * MIN,
    HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    WEEK,
];

/// A "nice" bucket width (1 s, 2 s, 5 s, 10 s, 30 s, 1 min, 5 min, 15 min, 1 h, 6 h, 1 d, 7 d, …) so that `span_ms` fits in at most `max_buckets` buckets.
///
/// Returns the smallest nice width `w` with `ceil(span_ms / w) <= max_buckets`; beyond a
/// week, the smallest whole number of weeks. `max_buckets == 0` is treated as 1 and a
/// zero span gets the smallest width (1 s).
pub fn step_for(span_ms: u64, max_buckets: usize) -> u64 {
    let max = (max_buckets.max(1)) as u64;
    let fits = |w: u64| span_ms.div_ceil(w) <= max;
    if let Some(w) = NICE.iter().copied().find(|&w| fits(w)) {
        return w;
    }
    let weeks = span_ms.div_ceil(WEEK).div_ceil(max).max(1);
    weeks.saturating_mul(WEEK)
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (used in tooltips and captions, and by the console's
/// tables, so that dates are written one way).
pub fn utc_full(ms: u64) -> String {
    let (y, mo, d) = civil(ms / DAY);
    let s = (ms % DAY) / SEC;
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// A short axis label whose precision follows the bucket width: seconds under a minute,
/// `HH:MM` under a day, the date from a day up.
pub(crate) fn utc_tick(ms: u64, step_ms: u64) -> String {
    let full = utc_full(ms);
    if step_ms >= DAY {
        full[5..10].to_string()
    } else if step_ms >= MIN {
        full[11..16].to_string()
    } else {
        full[11..19].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_for_picks_the_smallest_nice_width_that_fits() {
        assert_eq!(step_for(0, 10), SEC);
        assert_eq!(step_for(10 * SEC, 10), SEC);
        assert_eq!(step_for(10 * SEC + 1, 10), 2 * SEC);
        assert_eq!(step_for(HOUR, 60), MIN);
        assert_eq!(step_for(HOUR + 1, 60), 2 * MIN);
        assert_eq!(step_for(DAY, 24), HOUR);
        assert_eq!(step_for(DAY, 4), 6 * HOUR);
        assert_eq!(step_for(DAY, 3), 12 * HOUR);
        assert_eq!(step_for(7 * DAY, 7), DAY);
        assert_eq!(step_for(7 * DAY, 1), WEEK);
        assert_eq!(step_for(70 * DAY, 5), 2 * WEEK);
        assert!(step_for(u64::MAX, 1) >= WEEK);
        assert_eq!(step_for(5 * SEC, 0), 5 * SEC);
    }

    #[test]
    fn step_for_always_fits() {
        for span in [1, 999, 1_001, 59_999, 3_600_001, 86_400_000 * 400] {
            for max in [1usize, 2, 7, 24, 48, 100] {
                let w = step_for(span, max);
                assert!(
                    span.div_ceil(w) <= max as u64,
                    "span {span} max {max} w {w}"
                );
            }
        }
    }

    #[test]
    fn utc_labels() {
        assert_eq!(utc_full(0), "1970-01-01 00:00:00");
        // 2026-12-07 03:09:51 UTC
        assert_eq!(utc_full(1_796_612_991_000), "2026-12-07 03:09:51");
        assert_eq!(utc_full(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_tick(1_796_612_991_000, MIN), "03:09");
        assert_eq!(utc_tick(1_796_612_991_000, SEC), "03:09:51");
        assert_eq!(utc_tick(1_796_612_991_000, DAY), "12-07");
    }
}

/// A bucket width as people say it: `1 s`, `5 min`, `6 h`, `7 d`.
pub(crate) fn duration(ms: u64) -> String {
    for (unit, name) in [(DAY, "d"), (HOUR, "h"), (MIN, "min"), (SEC, "s")] {
        if ms >= unit && ms.is_multiple_of(unit) {
            return format!("{} {name}", ms / unit);
        }
    }
    format!("{ms} ms")
}

#[cfg(test)]
mod duration_tests {
    #[test]
    fn durations_read_naturally() {
        assert_eq!(super::duration(5_000), "5 s");
        assert_eq!(super::duration(300_000), "5 min");
        assert_eq!(super::duration(21_600_000), "6 h");
        assert_eq!(super::duration(604_800_000), "7 d");
        assert_eq!(super::duration(1_500), "1500 ms");
    }
}
