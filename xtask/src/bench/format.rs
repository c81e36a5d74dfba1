//! How figures, times and verdicts are written on the page.

use super::results::Spread;

/// A time in nanoseconds with three significant digits, or so.
pub(super) fn ns(value: f64) -> String {
    match value {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

/// A criterion figure in nanoseconds, with the fastest and slowest of its samples after it.
pub(super) fn ns_spread(value: f64, spread: Option<(f64, f64)>) -> String {
    match spread {
        Some((low, high)) => format!("{} ({}-{})", ns(value), ns(low), ns(high)),
        None => ns(value),
    }
}

/// The median of an interleaved figure in nanoseconds, with its least and greatest after it, or
/// `n/a` when it was not measured.
pub(super) fn median_spread(spread: Option<Spread>) -> String {
    spread.map_or("n/a".into(), |s| ns_spread(s.median, Some((s.min, s.max))))
}

/// A time given in nanoseconds, in the unit that suits it (ns, µs, ms or s) with three significant
/// digits or so, and the fastest and slowest of its samples after it, in the same unit.
pub(super) fn time_spread(nanoseconds: f64, spread: Option<(f64, f64)>) -> String {
    let (scale, unit) = match nanoseconds {
        v if v < 1e3 => (1.0, "ns"),
        v if v < 1e6 => (1e3, "µs"),
        v if v < 1e9 => (1e6, "ms"),
        _ => (1e9, "s"),
    };
    let figure = |value: f64| ns(value / scale);
    match spread {
        Some((low, high)) => {
            format!("{} {unit} ({}-{})", figure(nanoseconds), figure(low), figure(high))
        }
        None => format!("{} {unit}", figure(nanoseconds)),
    }
}

/// A ratio with three significant digits, or so; three decimals up to 1.01, so that a ratio
/// just past a target of 1 does not read as 1.00.
pub(super) fn ratio(value: f64) -> String {
    match value {
        v if v < 1.01 => format!("{v:.3}"),
        v if v < 10.0 => format!("{v:.2}"),
        v => format!("{v:.1}"),
    }
}

/// A ratio's median with its least and greatest after it, each as [`ratio`] writes it.
pub(super) fn ratio_spread(spread: Spread) -> String {
    format!("{} ({}-{})", ratio(spread.median), ratio(spread.min), ratio(spread.max))
}

/// A date and time in UTC, from seconds since the epoch.
pub(super) fn utc(seconds: u64) -> String {
    // Days to a civil date: Howard Hinnant's `civil_from_days`, for the proleptic Gregorian
    // calendar.
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

/// "met" or "not met", in bold, for a target's verdict.
pub(super) fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**not met**"
    }
}

/// Items joined as in a sentence: "a", "a and b", "a, b and c".
pub(super) fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// "yes", "no" or "not measured".
pub(super) fn yes_no(met: Option<bool>) -> String {
    match met {
        Some(true) => "yes".into(),
        Some(false) => "**no**".into(),
        None => "not measured".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_written_in_the_unit_of_its_size_with_its_spread_in_the_same() {
        assert_eq!(time_spread(148.6, None), "149 ns");
        assert_eq!(time_spread(386_120.0, Some((350_400.0, 420_000.0))), "386 µs (350-420)");
        assert_eq!(
            time_spread(6_571_000.0, Some((5_980_000.0, 7_200_000.0))),
            "6.57 ms (5.98-7.20)"
        );
        assert_eq!(time_spread(2.5e9, None), "2.50 s");
    }

    #[test]
    fn a_ratio_just_past_one_does_not_read_as_one() {
        assert_eq!(ratio(1.0012), "1.001");
        assert_eq!(ratio(0.9996), "1.000");
        assert_eq!(ratio(1.06), "1.06");
        assert_eq!(ratio(0.219), "0.219");
        assert_eq!(ratio(12.34), "12.3");
    }
}
