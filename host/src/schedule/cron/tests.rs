//! Cron unit tests: parsing, the walk, DST, and Quartz's edge cases.
use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
}

fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<DateTime<Utc>> {
    let schedule = CronSchedule::parse(expr, tz).unwrap();
    let mut out = Vec::new();
    let mut cursor = utc(after);
    for _ in 0..n {
        match schedule.next_after(cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    out
}

#[test]
fn spring_forward_gap_is_reported_then_next_day_fires() {
    let schedule = CronSchedule::parse("0 30 2 * * ?", "America/New_York").unwrap();
    let events: Vec<CronEvent> = schedule
        .events_after(utc("2027-03-13T12:00:00Z"))
        .take(2)
        .collect();
    assert_eq!(
        events,
        vec![
            CronEvent::DstGap {
                local: local("2027-03-14T02:30:00"),
                // 02:00 EST, when the clocks jumped to 03:00 EDT.
                at: utc("2027-03-14T07:00:00Z"),
            },
            CronEvent::Fire(utc("2027-03-15T06:30:00Z")),
        ]
    );
    assert_eq!(
        schedule.next_event_after(utc("2027-03-13T12:00:00Z")),
        Some(events[0])
    );
    // next_after skips the gap silently, like Quartz.
    assert_eq!(
        schedule.next_after(utc("2027-03-13T12:00:00Z")),
        Some(utc("2027-03-15T06:30:00Z"))
    );
}

#[test]
fn hourly_schedule_reports_the_missing_hour_and_keeps_the_fire_at_the_jump() {
    let schedule = CronSchedule::parse("0 0 * * * ?", "America/New_York").unwrap();
    let events: Vec<CronEvent> = schedule
        .events_after(utc("2027-03-14T05:30:00Z"))
        .take(3)
        .collect();
    assert_eq!(
        events,
        vec![
            CronEvent::Fire(utc("2027-03-14T06:00:00Z")), // 01:00 EST
            CronEvent::DstGap {
                local: local("2027-03-14T02:00:00"),
                at: utc("2027-03-14T07:00:00Z"),
            },
            CronEvent::Fire(utc("2027-03-14T07:00:00Z")), // 03:00 EDT
        ]
    );
}

#[test]
fn every_gap_time_is_reported_in_wall_clock_order() {
    let schedule = CronSchedule::parse("0 */20 2 * * ?", "America/New_York").unwrap();
    let gaps: Vec<NaiveDateTime> = schedule
        .events_after(utc("2027-03-13T12:00:00Z"))
        .take_while(|e| matches!(e, CronEvent::DstGap { .. }))
        .map(|e| match e {
            CronEvent::DstGap { local, .. } => local,
            CronEvent::Fire(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        gaps,
        vec![
            local("2027-03-14T02:00:00"),
            local("2027-03-14T02:20:00"),
            local("2027-03-14T02:40:00"),
        ]
    );
}

#[test]
fn autumn_fold_fires_once() {
    // Quartz reads 01:30 on the fall-back day with the standard-time
    // offset, i.e. the *second* 01:30 (06:30Z, EST), not 05:30Z (EDT);
    // the Europe/Berlin fold vector in the Quartz test data confirms this.
    assert_eq!(
        fires(
            "0 30 1 * * ?",
            "America/New_York",
            "2027-11-06T12:00:00Z",
            3
        ),
        vec![
            utc("2027-11-07T06:30:00Z"),
            utc("2027-11-08T06:30:00Z"),
            utc("2027-11-09T06:30:00Z"),
        ]
    );
    // An hourly schedule fires once for 01:00 too.
    assert_eq!(
        fires("0 0 * * * ?", "America/New_York", "2027-11-07T03:30:00Z", 3),
        vec![
            utc("2027-11-07T04:00:00Z"), // 00:00 EDT
            utc("2027-11-07T06:00:00Z"), // 01:00 EST
            utc("2027-11-07T07:00:00Z"), // 02:00 EST
        ]
    );
    // No gap events around a fold.
    let schedule = CronSchedule::parse("0 0 * * * ?", "America/New_York").unwrap();
    assert!(
        schedule
            .events_after(utc("2027-11-07T03:30:00Z"))
            .take(5)
            .all(|e| matches!(e, CronEvent::Fire(_)))
    );
}

#[test]
fn expressions_that_never_fire_again_end() {
    let after = utc("2026-11-23T00:00:00Z");
    for expr in [
        "0 0 0 30 2 ?",
        "0 0 0 31 4 ?",
        "0 0 0 * * ? 2020",
        "0 0 0 ? 2 1#5 2027",
    ] {
        let schedule = CronSchedule::parse(expr, "Europe/Berlin").unwrap();
        assert_eq!(schedule.next_after(after), None, "{expr}");
        assert_eq!(schedule.events_after(after).next(), None, "{expr}");
    }
    let last = CronSchedule::parse("59 59 23 31 12 ? *", "UTC").unwrap();
    assert_eq!(
        last.next_after(utc("2099-06-01T00:00:00Z")),
        Some(utc("2099-12-31T23:59:59Z"))
    );
    assert_eq!(last.next_after(utc("2099-12-31T23:59:59Z")), None);
}

#[test]
fn a_gap_with_no_later_fire_is_still_reported() {
    let schedule = CronSchedule::parse("0 30 2 14 3 ? 2027", "America/New_York").unwrap();
    let events: Vec<CronEvent> = schedule.events_after(utc("2027-01-01T00:00:00Z")).collect();
    assert_eq!(
        events,
        vec![CronEvent::DstGap {
            local: local("2027-03-14T02:30:00"),
            at: utc("2027-03-14T07:00:00Z"),
        }]
    );
}

#[test]
fn wrap_around_ranges_and_quartz_weekday_numbers() {
    assert_eq!(
        fires("0 0 22-2 * * ?", "UTC", "2027-01-01T20:00:00Z", 6),
        vec![
            utc("2027-01-01T22:00:00Z"),
            utc("2027-01-01T23:00:00Z"),
            utc("2027-01-02T00:00:00Z"),
            utc("2027-01-02T01:00:00Z"),
            utc("2027-01-02T02:00:00Z"),
            utc("2027-01-02T22:00:00Z"),
        ]
    );
    // FRI-MON wraps over the weekend; 2027-01-01 is a Friday.
    assert_eq!(
        fires("0 0 12 ? * FRI-MON", "UTC", "2027-01-01T00:00:00Z", 5),
        vec![
            utc("2027-01-01T12:00:00Z"),
            utc("2027-01-02T12:00:00Z"),
            utc("2027-01-03T12:00:00Z"),
            utc("2027-01-04T12:00:00Z"),
            utc("2027-01-08T12:00:00Z"),
        ]
    );
    // Names are case-insensitive.
    assert_eq!(
        fires("0 0 12 ? jan,feb sun", "UTC", "2027-01-01T00:00:00Z", 1),
        vec![utc("2027-01-03T12:00:00Z")]
    );
    // 'L' alone in day-of-week is Saturday (7).
    assert_eq!(
        fires("0 0 12 ? * L", "UTC", "2027-01-01T00:00:00Z", 1),
        vec![utc("2027-01-02T12:00:00Z")]
    );
}

#[test]
fn errors_quote_the_expression_and_name_the_field() {
    let err = CronSchedule::parse("0 0 * * * * *", "UTC").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid cron expression \"0 0 * * * * *\": day-of-month and day-of-week \
         are both set; one of them must be '?'"
    );
    let err = CronSchedule::parse("0 0 12 ? * 5#6", "UTC").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("invalid cron expression \"0 0 12 ? * 5#6\":"),
        "{msg}"
    );
    assert!(msg.contains("day-of-week"), "{msg}");
    assert!(msg.contains("\"5#6\""), "{msg}");
    let err = CronSchedule::parse("0 0 25 * * ?", "UTC").unwrap_err();
    assert!(matches!(
        err,
        CronError::InvalidField {
            field: CronField::Hours,
            ..
        }
    ));
    assert!(err.to_string().contains("\"0 0 25 * * ?\""));
    let err = CronSchedule::parse("* * * * *", "UTC").unwrap_err();
    assert!(err.to_string().contains("\"* * * * *\""), "{err}");
    assert!(err.to_string().contains("found 5"), "{err}");
    let err = CronSchedule::parse("0 0 12 * * ?", "Mars/Base").unwrap_err();
    assert_eq!(err.to_string(), "unknown time zone \"Mars/Base\"");
}

#[test]
fn parser_never_panics_on_odd_input() {
    let odd = [
        "",
        " ",
        "\t\n",
        "99999999999999999999 * * * * ?",
        "0 0 99999999999999999999 * * ?",
        "0 0 0 ? * 99999999999999999999",
        "é ü ñ 字 🙂 ?",
        "0 0 0 ? * MÖN",
        "0/0 * * * * ?",
        "*/0 * * * * ?",
        "1- * * * * ?",
        "-1 * * * * ?",
        "1-2-3 * * * * ?",
        "1/2/3 * * * * ?",
        "# * * * * ?",
        "0 0 0 L-40 * ?",
        "0 0 0 L- * ?",
        "0 0 0 L-W * ?",
        "0 0 0 L-28W * ?",
        "0 0 0 LL * ?",
        "0 0 0 W * ?",
        "0 0 0 0W * ?",
        "0 0 0 32W * ?",
        "0 0 0 L,1 * ?",
        "0 0 0 ? * 5#6",
        "0 0 0 ? * 5#",
        "0 0 0 ? * #3",
        "0 0 0 ? * 8#1",
        "0 0 0 ? * 0L",
        "0 0 0 ? * L#2",
        "0 0 0 ? * 5L,6",
        "0 0 0 ? * 6#3,5",
        "0 0 0 ? * ?",
        "0 0 0 * * *",
        "0 0 0 ?,1 * ?",
        "0 0 0 1,,2 * ?",
        "0 0 0 1, * ?",
        "0 0 0 ? * MON-FRI/2",
        "0 0 0 ? * MONDAY",
        "0 0 0 ? JANUARY *",
        "0 0 0 ? * * 1969",
        "0 0 0 ? * * 2100",
        "0 0 0 ? * * 2030-2020",
        "0 0 0 ? * * 2020/0",
        "0 0 0 ? * * * extra",
        "*/60 * * * * ?",
        "0 0 0 ? 0 *",
        "0 0 0 ? * 0",
        "0 0 24 * * ?",
        "0 0 0 ? * /",
        "0 0 0 ? * -",
        "0 0 0 ? * ,",
        "0 0 0 ?? * *",
        "0 0 0 ? * ??",
    ];
    for expr in odd {
        assert!(
            CronSchedule::parse(expr, "UTC").is_err(),
            "expected {expr:?} to be rejected"
        );
    }
    // Accepted oddities must also compute without panicking.
    let fine = [
        "0 0 0 L-30 * ?",
        "0 0 0 L-27W * ?",
        "0 0 0 31W * ?",
        "0 0 0 1W * ?",
        "0 0 0 ? * 1#5",
        "0 0 0 ? * SUNL",
        "0 0 0 ? * FRI#3",
        "0 0 0 ? * 7-1/3",
        "0 0 0 31-1 * ?",
        "0 0 0 ? DEC-FEB *",
        "0 0 0 ? * * 2099",
        "0 0 0 1/31 * ?",
        "  0   0  0 ? * *  ",
        "0 0 0 ? * * 1970/129",
    ];
    for tz in [
        "UTC",
        "America/Santiago",
        "Pacific/Apia",
        "Australia/Lord_Howe",
    ] {
        for expr in fine {
            let schedule = CronSchedule::parse(expr, tz).unwrap();
            for after in [
                "1900-01-01T00:00:00Z",
                "2011-12-28T00:00:00Z",
                "2099-12-31T00:00:00Z",
                "9999-01-01T00:00:00Z",
            ] {
                let mut events = schedule.events_after(utc(after));
                for _ in 0..20 {
                    if events.next().is_none() {
                        break;
                    }
                }
            }
        }
    }
}

#[test]
fn value_set_tail_lookup() {
    let mut set = ValueSet::new(1970);
    for y in [1970, 2033, 2099] {
        set.insert(y);
    }
    assert_eq!(set.first(), Some(1970));
    assert_eq!(set.first_at_or_after(1971), Some(2033));
    assert_eq!(set.first_at_or_after(2034), Some(2099));
    assert_eq!(set.first_at_or_after(2100), None);
    assert_eq!(set.first_at_or_after(0), Some(1970));
}

#[test]
fn civil_day_arithmetic_round_trips() {
    for days in -800..80_000 {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
    assert_eq!(last_day_of_month(2028, 2), 29);
    assert_eq!(last_day_of_month(2100, 2), 28);
    assert_eq!(last_day_of_month(2027, 13), 31);
}
