//! Freeze windows: named spans of time in which runs of some runbooks, environments or targets
//! are refused (a year-end freeze, "Friday 16:00 to Monday 08:00" every week). Pure rules, no
//! I/O; the clock is passed in.
//!
//! Times are read in the window's own time zone, so a weekly window keeps its wall-clock hours
//! across daylight saving changes.

use jiff::{
    Timestamp, Zoned,
    civil::{Date, DateTime, Time, Weekday},
    tz::{AmbiguousOffset, TimeZone},
};
use time::OffsetDateTime;

/// When a window holds.
#[derive(Debug, Clone)]
pub enum Span {
    /// From one moment to another (`from` inclusive, `to` exclusive).
    Fixed { from: Timestamp, to: Timestamp },
    /// Every week, from a weekday and time to a weekday and time, in `zone`. When `to` comes
    /// before `from` in the week (Friday to Monday), the window runs over the weekend.
    Weekly {
        from: (Weekday, Time),
        to: (Weekday, Time),
    },
}

/// What a window covers: a run is covered when every list that is not empty names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub runbooks: Vec<String>,
    pub environments: Vec<String>,
    pub targets: Vec<String>,
}

impl Scope {
    /// Whether a run of `runbook` on `target` (in `env`, when its runbook declares one) is
    /// covered. A window that lists environments does not cover a run with none. Case is
    /// ignored: an expression may accept `PRODUCTION` for `production`.
    pub fn covers(&self, runbook: &str, env: Option<&str>, target: &str) -> bool {
        let listed = |list: &[String], value: Option<&str>| {
            list.is_empty()
                || value.is_some_and(|v| list.iter().any(|l| l.to_lowercase() == v.to_lowercase()))
        };
        listed(&self.runbooks, Some(runbook))
            && listed(&self.environments, env)
            && listed(&self.targets, Some(target))
    }

    /// Whether some run could be covered by both scopes.
    pub fn meets(&self, other: &Scope) -> bool {
        let meet = |a: &[String], b: &[String]| {
            a.is_empty()
                || b.is_empty()
                || a.iter()
                    .any(|x| b.iter().any(|y| x.to_lowercase() == y.to_lowercase()))
        };
        meet(&self.runbooks, &other.runbooks)
            && meet(&self.environments, &other.environments)
            && meet(&self.targets, &other.targets)
    }

    /// What the scope names, for messages: `deploy · production`; `everything` when nothing.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [&self.runbooks, &self.environments, &self.targets]
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(|l| l.join(", "))
            .collect();
        if parts.is_empty() {
            "every runbook".to_owned()
        } else {
            parts.join(" · ")
        }
    }
}

/// One configured freeze window.
#[derive(Debug, Clone)]
pub struct Freeze {
    pub name: String,
    pub span: Span,
    pub zone: TimeZone,
    /// The zone's name as written (`Europe/Berlin`), for messages.
    pub zone_name: String,
    pub scope: Scope,
}

/// `Fri 16:00` (a weekday, English, three letters or whole, and a 24-hour time).
pub fn parse_weekly(text: &str) -> Result<(Weekday, Time), String> {
    let (day, clock) = text
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("`{text}` is not a weekday and a time, like \"Fri 16:00\""))?;
    let weekday = match day.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return Err(format!("`{day}` is not a weekday (Mon, Tue, … Sun)")),
    };
    Ok((weekday, parse_clock(clock.trim())?))
}

/// `16:00` (24-hour).
fn parse_clock(text: &str) -> Result<Time, String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a time like \"16:00\""))?;
    let number = |s: &str, max: i8| {
        s.parse::<i8>()
            .ok()
            .filter(|n| (0..=max).contains(n) && s.len() == 2)
    };
    match (number(h, 23), number(m, 59)) {
        (Some(h), Some(m)) => Time::new(h, m, 0, 0).map_err(|e| e.to_string()),
        _ => Err(format!("`{text}` is not a time like \"16:00\"")),
    }
}

/// `2026-12-20 00:00` (a date and a 24-hour time, in the window's zone).
pub fn parse_moment(text: &str, zone: &TimeZone) -> Result<Timestamp, String> {
    let (date, clock) = text
        .trim()
        .split_once([' ', 'T'])
        .ok_or_else(|| format!("`{text}` is not a date and a time, like \"2026-12-20 00:00\""))?;
    let date: Date = date
        .parse()
        .map_err(|_| format!("`{date}` is not a date like \"2026-12-20\""))?;
    // Seconds are allowed here (`16:00:30`), for windows written by tools.
    let clock = match clock.trim().rsplit_once(':') {
        Some((hm, sec)) if hm.contains(':') => {
            let seconds = sec
                .parse::<i8>()
                .ok()
                .filter(|s| (0..60).contains(s) && sec.len() == 2)
                .ok_or_else(|| format!("`{clock}` is not a time like \"16:00\""))?;
            let t = parse_clock(hm)?;
            Time::new(t.hour(), t.minute(), seconds, 0).map_err(|e| e.to_string())?
        }
        _ => parse_clock(clock.trim())?,
    };
    zone.to_ambiguous_timestamp(date.to_datetime(clock))
        .compatible()
        .map_err(|e| format!("`{text}` is not a time in that zone: {e}"))
}

/// The time zone called `name` (`UTC`, `Europe/Berlin`).
pub fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("`{name}` is not a known time zone (like \"Europe/Berlin\" or \"UTC\")")
    })
}

fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_second(t.unix_timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn offset(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Minutes from Monday 00:00.
fn week_minute(day: Weekday, t: Time) -> i32 {
    i32::from(day.to_monday_zero_offset()) * 1440 + i32::from(t.hour()) * 60 + i32::from(t.minute())
}

impl Freeze {
    /// If the window holds at `now`, when it ends.
    pub fn active_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let now = timestamp(now);
        match &self.span {
            Span::Fixed { from, to } => (*from <= now && now < *to).then(|| offset(*to)),
            Span::Weekly { from, to } => {
                let local = now.to_zoned(self.zone.clone());
                let at = week_minute(local.weekday(), local.time());
                let (start, end) = (week_minute(from.0, from.1), week_minute(to.0, to.1));
                let inside = if start < end {
                    start <= at && at < end
                } else {
                    at >= start || at < end
                };
                inside.then(|| offset(self.next(&local, *to)))
            }
        }
    }

    /// The first moment after `after` that is `day` at `clock` in this window's zone.
    fn next(&self, after: &Zoned, (day, clock): (Weekday, Time)) -> Timestamp {
        let today = after.date();
        let ahead = (i32::from(day.to_monday_zero_offset())
            - i32::from(today.weekday().to_monday_zero_offset()))
        .rem_euclid(7);
        let mut date = today
            .checked_add(jiff::Span::new().days(ahead))
            .unwrap_or(today);
        loop {
            // When the clock goes back, the wall time happens twice: the first of the two that
            // is still to come.
            let ambiguous = self
                .zone
                .to_ambiguous_timestamp(DateTime::from_parts(date, clock));
            let moment = match ambiguous.offset() {
                // When the clock goes forward past it, the wall time never happens: the
                // moment is the jump itself (the last transition before the time read after it).
                AmbiguousOffset::Gap { .. } => {
                    let after_gap = ambiguous.compatible().unwrap_or(after.timestamp());
                    self.zone
                        .preceding(after_gap)
                        .next()
                        .map(|t| t.timestamp())
                        .unwrap_or(after_gap)
                }
                _ => {
                    let earlier = ambiguous.earlier().unwrap_or(after.timestamp());
                    if earlier > after.timestamp() {
                        earlier
                    } else {
                        ambiguous.later().unwrap_or(after.timestamp())
                    }
                }
            };
            if moment > after.timestamp() {
                return moment;
            }
            date = date.checked_add(jiff::Span::new().days(7)).unwrap_or(date);
            if date.year() > 9000 {
                return moment;
            }
        }
    }

    /// The spans of this window that meet `[from, to)`.
    fn spans_within(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        match &self.span {
            Span::Fixed { from: a, to: b } => {
                if *a < to && from < *b {
                    vec![(*a, *b)]
                } else {
                    Vec::new()
                }
            }
            Span::Weekly {
                from: start,
                to: end,
            } => {
                let mut out = Vec::new();
                // A span that began up to a week before `from` may still be open at `from`.
                let mut cursor = from
                    .checked_sub(jiff::SignedDuration::from_hours(24 * 8))
                    .unwrap_or(from)
                    .to_zoned(self.zone.clone());
                while out.len() < 2000 {
                    let begins = self.next(&cursor, *start);
                    if begins >= to {
                        break;
                    }
                    let begins_z = begins.to_zoned(self.zone.clone());
                    let ends = self.next(&begins_z, *end);
                    if ends > from {
                        out.push((begins, ends));
                    }
                    cursor = begins_z;
                }
                out
            }
        }
    }

    /// A moment at which this window and `other` both hold, looked for from `from` until
    /// `until` (and anywhere two fixed windows share), when their scopes could meet.
    pub fn overlap(
        &self,
        other: &Freeze,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if !self.scope.meets(&other.scope) {
            return None;
        }
        let (mut from, mut until) = (timestamp(from), timestamp(until));
        // Two fixed windows are compared wherever they lie; with one, look within it.
        for freeze in [self, other] {
            if let Span::Fixed { from: a, to: b } = freeze.span {
                from = from.min(a);
                until = until.max(b);
            }
        }
        let mine = self.spans_within(from, until);
        let theirs = other.spans_within(from, until);
        mine.iter()
            .flat_map(|a| theirs.iter().map(move |b| (a, b)))
            .find(|(a, b)| a.0 < b.1 && b.0 < a.1)
            .map(|(a, b)| offset(a.0.max(b.0)))
    }

    /// When the window ends, said in its own zone: `Mon 2026-12-07 08:00 Europe/Berlin`.
    pub fn local(&self, t: OffsetDateTime) -> String {
        let z = timestamp(t).to_zoned(self.zone.clone());
        format!(
            "{} {} {:02}:{:02} {}",
            weekday_name(z.weekday()),
            z.date(),
            z.hour(),
            z.minute(),
            self.zone_name
        )
    }
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn weekend(zone_name: &str) -> Freeze {
        Freeze {
            name: "weekend".into(),
            span: Span::Weekly {
                from: parse_weekly("Fri 16:00").unwrap(),
                to: parse_weekly("Mon 08:00").unwrap(),
            },
            zone: zone(zone_name).unwrap(),
            zone_name: zone_name.into(),
            scope: Scope {
                environments: vec!["production".into()],
                ..Scope::default()
            },
        }
    }

    #[test]
    fn a_weekend_window_holds_from_friday_afternoon_to_monday_morning_in_its_zone() {
        let w = weekend("Europe/Berlin");
        // Fri 2026-12-04 15:00 UTC is 16:00 in Berlin (UTC+1 in winter).
        assert_eq!(w.active_at(datetime!(2026-12-04 14:59 UTC)), None);
        let end = w.active_at(datetime!(2026-12-04 15:00 UTC)).unwrap();
        assert_eq!(end, datetime!(2026-12-07 07:00 UTC));
        assert_eq!(w.local(end), "Mon 2026-12-07 08:00 Europe/Berlin");
        assert!(w.active_at(datetime!(2026-12-06 12:00 UTC)).is_some());
        assert_eq!(w.active_at(datetime!(2026-12-07 07:00 UTC)), None);
        assert_eq!(w.active_at(datetime!(2026-12-09 12:00 UTC)), None);
        // In summer Berlin is UTC+2: the same wall-clock hours, an hour earlier in UTC.
        assert!(w.active_at(datetime!(2026-07-03 14:00 UTC)).is_some());
        assert_eq!(w.active_at(datetime!(2026-07-03 13:59 UTC)), None);
    }

    #[test]
    fn a_window_ending_in_the_repeated_hour_ends_at_its_second_pass() {
        // Berlin goes from 03:00 CEST back to 02:00 CET on Sun 2026-10-25: 02:30 happens at
        // 00:30 UTC and again at 01:30 UTC.
        let w = Freeze {
            name: "late".into(),
            span: Span::Weekly {
                from: parse_weekly("Fri 16:00").unwrap(),
                to: parse_weekly("Sun 02:30").unwrap(),
            },
            zone: zone("Europe/Berlin").unwrap(),
            zone_name: "Europe/Berlin".into(),
            scope: Scope::default(),
        };
        // 01:15 UTC is the second 02:15: still inside, ending a quarter of an hour later.
        assert_eq!(
            w.active_at(datetime!(2026-10-25 01:15 UTC)),
            Some(datetime!(2026-10-25 01:30 UTC))
        );
        // On Sun 2026-03-29 the clock jumps from 02:00 CET to 03:00 CEST: 02:30 never comes,
        // and the window ends at the jump (01:00 UTC).
        assert_eq!(
            w.active_at(datetime!(2026-03-29 00:45 UTC)),
            Some(datetime!(2026-03-29 01:00 UTC))
        );
        assert_eq!(w.active_at(datetime!(2026-03-29 01:00 UTC)), None);
    }

    #[test]
    fn a_fixed_window_holds_between_its_moments() {
        let z = zone("UTC").unwrap();
        let f = Freeze {
            name: "year-end".into(),
            span: Span::Fixed {
                from: parse_moment("2026-12-20 00:00", &z).unwrap(),
                to: parse_moment("2027-01-04 08:00", &z).unwrap(),
            },
            zone: z,
            zone_name: "UTC".into(),
            scope: Scope::default(),
        };
        assert_eq!(f.active_at(datetime!(2026-12-19 23:59 UTC)), None);
        assert_eq!(
            f.active_at(datetime!(2026-12-25 12:00 UTC)),
            Some(datetime!(2027-01-04 08:00 UTC))
        );
        assert_eq!(f.active_at(datetime!(2027-01-04 08:00 UTC)), None);
        // It overlaps a weekend window on a weekend inside it, when their scopes meet.
        let w = weekend("UTC");
        let at = f
            .overlap(
                &w,
                datetime!(2026-12-01 00:00 UTC),
                datetime!(2027-12-01 00:00 UTC),
            )
            .unwrap();
        assert_eq!(
            at,
            datetime!(2026-12-20 00:00 UTC),
            "Sunday the 20th is in both"
        );
        let mut elsewhere = w.clone();
        elsewhere.scope.runbooks = vec!["restart".into()];
        let mut f_deploy = f.clone();
        f_deploy.scope.runbooks = vec!["deploy".into()];
        assert_eq!(
            f_deploy.overlap(
                &elsewhere,
                datetime!(2026-12-01 00:00 UTC),
                datetime!(2027-12-01 00:00 UTC)
            ),
            None,
            "different runbooks never meet"
        );
    }

    #[test]
    fn bad_times_are_refused_plainly() {
        assert!(
            parse_weekly("Friday")
                .unwrap_err()
                .contains("weekday and a time")
        );
        assert!(
            parse_weekly("Fry 16:00")
                .unwrap_err()
                .contains("not a weekday")
        );
        assert!(
            parse_weekly("Fri 25:00")
                .unwrap_err()
                .contains("not a time")
        );
        assert!(parse_weekly("Fri 4pm").unwrap_err().contains("not a time"));
        let z = zone("UTC").unwrap();
        assert!(
            parse_moment("2026-13-01 00:00", &z)
                .unwrap_err()
                .contains("not a date")
        );
        assert!(
            zone("Mars/Olympus")
                .unwrap_err()
                .contains("not a known time zone")
        );
    }

    #[test]
    fn scopes_cover_and_meet() {
        let s = Scope {
            runbooks: vec!["deploy".into()],
            environments: vec!["production".into()],
            targets: vec![],
        };
        assert!(s.covers("deploy", Some("production"), "api/production"));
        assert!(!s.covers("deploy", Some("staging"), "api/staging"));
        assert!(s.covers("deploy", Some("PRODUCTION"), "api/PRODUCTION"));
        assert!(!s.covers("deploy", None, "deploy"));
        assert!(!s.covers("restart", Some("production"), "api/production"));
        assert!(Scope::default().covers("anything", None, "x"));
        assert!(s.meets(&Scope::default()));
        assert_eq!(s.describe(), "deploy · production");
    }
}
