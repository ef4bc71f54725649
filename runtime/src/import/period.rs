//! mon's time periods (Perl's `Time::Period`), limited to the scales a service check needs:
//! week day, hour and minute.
//!
//! A period is one or more sub-periods separated by commas (any of them may match); a
//! sub-period is one or more `scale {range ...}` blocks that must all match; the ranges of one
//! scale (also when the scale is repeated) add up. A range is `v` or `v-v`, inclusive, and wraps
//! around when the first value is the larger (`hr {10pm-2am}`). Values are discrete in their
//! scale: `hr {9am-4pm}` is 9:00:00 through 16:59:59. Case and whitespace do not matter; an
//! empty period is always, `none` is never.
//!
//! | scale | long form | values |
//! | --- | --- | --- |
//! | `wd` | `wday` | `1`-`7` (1 = Sunday) or `su mo tu we th fr sa` (only the first two letters count: `Sun`, `Monday`) |
//! | `hr` | `hour` | `0`-`23` or `12am`, `1am`-`11am`, `12noon`, `12pm`, `1pm`-`11pm` |
//! | `min` | `minute` | `0`-`59` |
//!
//! Anything else (the year, month, week, day-of-year, day-of-month and second scales included)
//! is refused with an error naming the token.

/// A parsed period; `contains` evaluates it for a local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// Any of these matches; empty means never (`none`).
    any: Vec<SubPeriod>,
}

/// All scales present must match. `None`: the scale is not restricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SubPeriod {
    /// Bit n: week day n (0 = Sunday).
    wday: Option<u8>,
    /// Bit n: hour n.
    hour: Option<u32>,
    /// Bit n: minute n.
    minute: Option<u64>,
}

#[derive(Clone, Copy)]
enum Scale {
    Wday,
    Hour,
    Minute,
}

/// Longest period text looked at (a mon.cf line is at most 4 KiB anyway).
const MAX_LEN: usize = 4096;

impl Period {
    /// A period that always matches (what an absent `period` means).
    pub fn always() -> Period {
        Period {
            any: vec![SubPeriod::default()],
        }
    }

    pub fn parse(text: &str) -> Result<Period, String> {
        if text.len() > MAX_LEN {
            return Err(format!("period longer than {MAX_LEN} bytes"));
        }
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Ok(Period::always());
        }
        if lower == "none" {
            return Ok(Period { any: Vec::new() });
        }
        let mut any = Vec::new();
        for sub in lower.split(',') {
            any.push(parse_sub(sub)?);
        }
        Ok(Period { any })
    }

    /// Whether a local time lies in the period: `weekday` 0..=6 with Sunday = 0, `hour`
    /// 0..=23, `minute` 0..=59. Out-of-range values never match.
    pub fn contains(&self, weekday: u8, hour: u8, minute: u8) -> bool {
        if weekday > 6 || hour > 23 || minute > 59 {
            return false;
        }
        self.any.iter().any(|s| {
            s.wday.is_none_or(|m| m & (1 << weekday) != 0)
                && s.hour.is_none_or(|m| m & (1 << hour) != 0)
                && s.minute.is_none_or(|m| m & (1 << minute) != 0)
        })
    }

    /// Whether the period matches at every minute of the week.
    pub fn is_always(&self) -> bool {
        (0..7).all(|d| (0..24).all(|h| (0..60).all(|m| self.contains(d, h, m))))
    }
}

fn parse_sub(sub: &str) -> Result<SubPeriod, String> {
    let mut out = SubPeriod::default();
    let mut rest = sub.trim();
    if rest.is_empty() {
        return Err("empty sub-period (two commas in a row, or a comma at an end)".into());
    }
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            return Err(format!("`{rest}`: expected `scale {{ranges}}`"));
        };
        let name = rest[..open].trim();
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{}`: missing `}}`", rest.trim()));
        };
        let body = &after[..close];
        if body.contains('{') {
            return Err(format!("`{{{body}`: `{{` inside a range list"));
        }
        let scale = match name {
            "wd" | "wday" => Scale::Wday,
            "hr" | "hour" => Scale::Hour,
            "min" | "minute" => Scale::Minute,
            "yr" | "year" | "mo" | "month" | "wk" | "week" | "yd" | "yday" | "md" | "mday"
            | "sec" | "second" => {
                return Err(format!(
                    "scale `{name}` is not supported (only wd, hr and min are)"
                ))
            }
            "" => return Err(format!("`{{{body}}}` has no scale before it")),
            other => return Err(format!("`{other}` is not a scale (wd, hr, min)")),
        };
        let mask = parse_ranges(scale, body)?;
        match scale {
            Scale::Wday => *out.wday.get_or_insert(0) |= mask as u8,
            Scale::Hour => *out.hour.get_or_insert(0) |= mask as u32,
            Scale::Minute => *out.minute.get_or_insert(0) |= mask,
        }
        rest = after[close + 1..].trim_start();
    }
    Ok(out)
}

fn parse_ranges(scale: Scale, body: &str) -> Result<u64, String> {
    // "9am - 4pm" is one range: glue the dashes first.
    let mut glued = String::with_capacity(body.len());
    for word in body.split_whitespace() {
        if !glued.is_empty() && !glued.ends_with('-') && !word.starts_with('-') {
            glued.push(' ');
        }
        glued.push_str(word);
    }
    if glued.is_empty() {
        return Err("`{}`: empty range list".into());
    }
    let (size, _) = limits(scale);
    let mut mask = 0u64;
    for range in glued.split(' ') {
        let (a, b) = match range.split_once('-') {
            Some((a, b)) if a.is_empty() || b.is_empty() => {
                return Err(format!("`{range}` is not a range (v-v)"))
            }
            Some((a, b)) => (value(scale, a)?, value(scale, b)?),
            None => {
                let v = value(scale, range)?;
                (v, v)
            }
        };
        let mut v = a;
        loop {
            mask |= 1 << v;
            if v == b {
                break;
            }
            v = (v + 1) % size;
        }
    }
    Ok(mask)
}

/// (number of values, first value as written for numbers)
fn limits(scale: Scale) -> (u32, u32) {
    match scale {
        Scale::Wday => (7, 1),
        Scale::Hour => (24, 0),
        Scale::Minute => (60, 0),
    }
}

fn value(scale: Scale, token: &str) -> Result<u32, String> {
    let bad = || match scale {
        Scale::Wday => format!("`{token}` is not a week day (su..sa or 1..7)"),
        Scale::Hour => format!("`{token}` is not an hour (0..23, 12am..11am, 12noon, 12pm..11pm)"),
        Scale::Minute => format!("`{token}` is not a minute (0..59)"),
    };
    if token.is_empty() || token.contains('-') {
        return Err(bad());
    }
    let number = |t: &str| -> Option<u32> {
        (t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (size, first) = limits(scale);
    let v = match scale {
        Scale::Wday if token.as_bytes()[0].is_ascii_alphabetic() => {
            const DAYS: [&str; 7] = ["su", "mo", "tu", "we", "th", "fr", "sa"];
            if !token.bytes().all(|b| b.is_ascii_alphabetic()) || token.len() < 2 {
                return Err(bad());
            }
            DAYS.iter()
                .position(|d| token.starts_with(d))
                .ok_or_else(bad)? as u32
        }
        Scale::Hour
            if token.ends_with("am") || token.ends_with("pm") || token.ends_with("noon") =>
        {
            let (digits, suffix) =
                token.split_at(token.find(|c: char| !c.is_ascii_digit()).unwrap_or(0));
            let h = number(digits)
                .filter(|h| (1..=12).contains(h))
                .ok_or_else(bad)?;
            match suffix {
                "am" => h % 12,
                "pm" => h % 12 + 12,
                "noon" if h == 12 => 12,
                _ => return Err(bad()),
            }
        }
        _ => {
            let n = number(token).ok_or_else(bad)?;
            if n < first || n - first >= size {
                return Err(bad());
            }
            n - first
        }
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_period_is_all_day() {
        let p = Period::parse("hr {12am-11pm}").unwrap();
        assert!(p.is_always());
    }

    #[test]
    fn office_hours() {
        let p = Period::parse("wd {Mon-Fri} hr {9am-4pm}").unwrap();
        assert!(p.contains(1, 9, 0));
        assert!(p.contains(5, 16, 59));
        assert!(!p.contains(5, 17, 0));
        assert!(!p.contains(0, 12, 0));
        assert!(!p.contains(6, 12, 0));
        assert!(!p.contains(1, 8, 59));
    }

    #[test]
    fn sun_fri_and_numbers() {
        let p = Period::parse("wd {Sun-Fri}").unwrap();
        assert!(p.contains(0, 0, 0) && p.contains(5, 0, 0) && !p.contains(6, 0, 0));
        let q = Period::parse("wday {1-6}").unwrap();
        assert_eq!(p, q);
        let r = Period::parse("WD{ sunday - FRIDAY }").unwrap();
        assert_eq!(p, r);
    }

    #[test]
    fn several_blocks_and_wrap() {
        let p = Period::parse("wd {1 3 5 7} min {0-29}, wd {2 4 6} min {30-59}").unwrap();
        assert!(p.contains(0, 3, 10));
        assert!(!p.contains(0, 3, 40));
        assert!(p.contains(1, 3, 40));
        assert!(!p.contains(1, 3, 10));
        let night = Period::parse("hr {10pm-2am}").unwrap();
        assert!(night.contains(3, 23, 0) && night.contains(3, 2, 59) && !night.contains(3, 3, 0));
        let noon = Period::parse("hr {12noon} hour {12am}").unwrap();
        assert!(noon.contains(2, 12, 5) && noon.contains(2, 0, 5) && !noon.contains(2, 1, 0));
        // Repeated scale extends; different scales restrict.
        let p = Period::parse("hr {1} hr {3} min {0}").unwrap();
        assert!(p.contains(0, 1, 0) && p.contains(0, 3, 0) && !p.contains(0, 2, 0));
        assert!(!p.contains(0, 1, 1));
    }

    #[test]
    fn blank_and_none() {
        assert!(Period::parse("  ").unwrap().is_always());
        assert!(!Period::parse("None").unwrap().contains(0, 0, 0));
        assert!(!Period::always().contains(7, 0, 0));
    }

    #[test]
    fn errors_name_the_token() {
        for (text, token) in [
            ("mo {jan}", "mo"),
            ("yr {2020}", "yr"),
            ("sec {0-4}", "sec"),
            ("hr {9am-5xm}", "5xm"),
            ("hr {24}", "24"),
            ("hr {13pm}", "13pm"),
            ("min {60}", "60"),
            ("wd {xy}", "xy"),
            ("wd {0}", "0"),
            ("wd {8}", "8"),
            ("hours {1}", "hours"),
            ("hr {1", "missing `}`"),
            ("hr 1}", "hr 1}"),
            ("{1}", "no scale"),
            ("hr {}", "empty"),
            ("hr {1},", "empty sub-period"),
            ("hr {1-}", "1-"),
            ("hr {{1}}", "inside"),
        ] {
            let e = Period::parse(text).unwrap_err();
            assert!(e.contains(token), "{text}: {e}");
        }
    }
}
