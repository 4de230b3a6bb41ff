//! Numbers and times as people read them: sizes with binary units,
//! durations in the two largest units, times in UTC with how long ago.
//!
//! The calendar arithmetic (days since 1970 to a date) is the few lines of
//! Howard Hinnant's `civil_from_days`, so that this crate depends on
//! `maud` only; both consoles hand it a `SystemTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{html, Markup};

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// `bytes` with a binary unit and one decimal: `96348848` → `91.9 MiB`,
/// `512` → `512 B`.
pub fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    // 1023.95 and up would print as "1024.0": that is the next unit.
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `d` in its two largest units: `850 ms`, `4.2 s`, `42 s`, `3 min 5 s`,
/// `2 h 14 min`, `3 d 4 h`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{} ms", d.as_millis());
    }
    if secs < 10 {
        return format!("{:.1} s", d.as_secs_f64());
    }
    let (days, hours, mins, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big} {big_unit}")
        } else {
            format!("{big} {big_unit} {small} {small_unit}")
        }
    };
    match () {
        _ if days > 0 => two(days, "d", hours, "h"),
        _ if hours > 0 => two(hours, "h", mins, "min"),
        _ if mins > 0 => two(mins, "min", s, "s"),
        _ => format!("{s} s"),
    }
}

/// The time `ms` milliseconds after the Unix epoch (the box's `*_ms`
/// fields).
pub fn unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Seconds since the epoch, and the date and time of day in UTC.
fn civil(at: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    // Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms".
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60,
    )
}

/// `at` in UTC to the second: `2026-12-07 02:14:05 UTC`.
pub fn absolute_time(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(at);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// `at` as an RFC 3339 UTC timestamp, for a `<time datetime>`:
/// `2026-12-07T02:14:05Z`.
pub fn iso_time(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(at);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// How long before (or after) `now` `at` is: `just now`, `42 s ago`,
/// `3 min ago`, `2 h ago`, `5 d ago`, `in 3 min`.
pub fn relative_time(at: SystemTime, now: SystemTime) -> String {
    let (secs, future) = match now.duration_since(at) {
        Ok(past) => (past.as_secs(), false),
        Err(e) => (e.duration().as_secs(), true),
    };
    if secs < 5 {
        return "just now".to_string();
    }
    let span = match secs {
        0..60 => format!("{secs} s"),
        60..3_600 => format!("{} min", secs / 60),
        3_600..86_400 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// The lines of script that keep each [`time`]'s "(3 min ago)" true while
/// the page stays open: every 10 s, from its `<time datetime>` and the
/// browser's clock, with the rules of [`relative_time`]
/// (`banalyticsAgo(ms)` is that function). A console embeds them in its
/// one script.
pub const TIME_SCRIPT: &str = r#"function banalyticsAgo(ms) {
  var s = Math.floor(Math.abs(ms) / 1000), span;
  if (s < 5) { return "just now"; }
  if (s < 60) { span = s + " s"; }
  else if (s < 3600) { span = Math.floor(s / 60) + " min"; }
  else if (s < 86400) { span = Math.floor(s / 3600) + " h"; }
  else { span = Math.floor(s / 86400) + " d"; }
  return ms >= 0 ? span + " ago" : "in " + span;
}
setInterval(function () {
  document.querySelectorAll(".when").forEach(function (w) {
    var t = w.querySelector("time"), ago = w.querySelector(".ago");
    if (t && ago) { ago.textContent = "(" + banalyticsAgo(Date.now() - Date.parse(t.dateTime)) + ")"; }
  });
}, 10000);
"#;

/// `at`, absolute and relative to `now`, as
/// `<time datetime="2026-12-07T02:14:05Z">2026-12-07 02:14:05 UTC</time> (3 min ago)`.
pub fn time(at: SystemTime, now: SystemTime) -> Markup {
    html! {
        span.when {
            time datetime=(iso_time(at)) { (absolute_time(at)) }
            " " span.ago { "(" (relative_time(at, now)) ")" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_binary_units_and_one_decimal() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(20_000), "19.5 KiB");
        assert_eq!(human_size(96_348_848), "91.9 MiB");
        assert_eq!(human_size(1_048_575), "1.0 MiB", "never 1024.0 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_size(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn durations_use_their_two_largest_units() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(human_duration(Duration::from_millis(4_250)), "4.2 s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42 s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(human_duration(Duration::from_secs(180)), "3 min");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 3600 + 14 * 60 + 9)),
            "2 h 14 min"
        );
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3 d 4 h"
        );
    }

    /// 2026-12-07 02:14:05 UTC.
    const AT_MS: u64 = 1_796_609_645_000;

    #[test]
    fn times_are_utc_dates_to_the_second() {
        assert_eq!(absolute_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(absolute_time(unix_ms(AT_MS)), "2026-12-07 02:14:05 UTC");
        assert_eq!(iso_time(unix_ms(AT_MS)), "2026-12-07T02:14:05Z");
        // A leap day and the last second of a year.
        assert_eq!(
            absolute_time(unix_ms(951_782_400_000)),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(
            absolute_time(unix_ms(1_767_225_599_000)),
            "2025-12-31 23:59:59 UTC"
        );
    }

    #[test]
    fn relative_times_say_how_long_ago_or_how_soon() {
        let at = unix_ms(AT_MS);
        let later = |s| at + Duration::from_secs(s);
        assert_eq!(relative_time(at, later(2)), "just now");
        assert_eq!(relative_time(at, later(42)), "42 s ago");
        assert_eq!(relative_time(at, later(180)), "3 min ago");
        assert_eq!(relative_time(at, later(7_300)), "2 h ago");
        assert_eq!(relative_time(at, later(5 * 86_400)), "5 d ago");
        assert_eq!(relative_time(later(180), at), "in 3 min");
    }

    #[test]
    fn a_time_is_a_time_element_with_both_forms() {
        let at = unix_ms(AT_MS);
        let html = time(at, at + Duration::from_secs(180)).into_string();
        assert!(
            html.contains(
                r#"<time datetime="2026-12-07T02:14:05Z">2026-12-07 02:14:05 UTC</time>"#
            ),
            "{html}"
        );
        assert!(html.contains("(3 min ago)"), "{html}");
    }
}
