use super::*;
use crate::schedule::trigger::{MisfireLimits, MisfirePolicy, TriggerKind, TriggerSpec};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    vector: Vec<Vector>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    about: String,
    calendar: CalendarInput,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    at: String,
    until: Option<String>,
}

fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_millis()
}

fn def(name: &str, input: CalendarInput) -> CalendarDef {
    input.into_def(name, ms("2030-01-01T00:00:00Z")).unwrap()
}

fn input(kind: &str) -> CalendarInput {
    CalendarInput {
        kind: kind.into(),
        ..CalendarInput::default()
    }
}

#[test]
fn every_kind_excludes_what_the_hand_computed_vectors_say() {
    let vectors: Vectors = toml::from_str(include_str!("vectors.toml")).unwrap();
    let mut kinds = BTreeSet::new();
    for v in vectors.vector {
        let d = def("c", v.calendar);
        kinds.insert(d.rule.kind());
        let x = CalendarSet::new([d]).exclusion(&["c".into()]).unwrap();
        for case in &v.cases {
            let at = ms(&case.at);
            let want = case.until.as_deref().map(ms);
            assert_eq!(x.skip_to(at), want, "{}: at {}", v.about, case.at);
            assert_eq!(
                x.excluded_by(at).is_some(),
                want.is_some(),
                "{}: at {}",
                v.about,
                case.at
            );
        }
    }
    assert_eq!(kinds.len(), 5, "every kind has vectors: {kinds:?}");
}

#[test]
fn a_chain_excludes_what_any_of_its_calendars_excludes_and_names_which() {
    let weekend = CalendarInput {
        days: Some(vec!["SAT".into(), "SUN".into()]),
        ..input("weekly")
    };
    let xmas = CalendarInput {
        dates: Some(vec!["2030-12-25".into()]),
        base: Some("weekend".into()),
        ..input("holiday")
    };
    let set = CalendarSet::new([def("weekend", weekend), def("xmas", xmas)]);
    let x = set.exclusion(&["xmas".into()]).unwrap();
    // 2030-12-25 is a Wednesday, 12-28 a Saturday.
    assert_eq!(x.excluded_by(ms("2030-12-25T10:00:00Z")), Some("xmas"));
    assert_eq!(x.excluded_by(ms("2030-12-28T10:00:00Z")), Some("weekend"));
    assert_eq!(x.excluded_by(ms("2030-12-27T10:00:00Z")), None);
    assert_eq!(x.names(), ["xmas", "weekend"]);
    assert_eq!(
        set.dependents("weekend").into_iter().collect::<Vec<_>>(),
        ["weekend", "xmas"]
    );
    assert_eq!(set.based_on("weekend"), ["xmas"]);
}

#[test]
fn a_cycle_or_a_missing_base_is_an_error_naming_the_calendars() {
    let a = CalendarInput {
        base: Some("b".into()),
        ..CalendarInput {
            days: Some(vec!["MON".into()]),
            ..input("weekly")
        }
    };
    let b = CalendarInput {
        base: Some("a".into()),
        ..CalendarInput {
            days: Some(vec!["TUE".into()]),
            ..input("weekly")
        }
    };
    let set = CalendarSet::new([def("a", a.clone()), def("b", b)]);
    let e = set.exclusion(&["a".into()]).unwrap_err();
    assert_eq!(e.field, "base");
    assert!(e.message.contains("cycle: a -> b -> a"), "{e}");
    let lone = CalendarSet::new([def("a", a)]);
    let e = lone.exclusion(&["a".into()]).unwrap_err();
    assert!(e.message.contains("\"a\" names base \"b\""), "{e}");
    let e = lone.exclusion(&["zz".into()]).unwrap_err();
    assert_eq!(e.message, "no calendar \"zz\"");
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let now = ms("2030-01-01T00:00:00Z");
    let cases: Vec<(CalendarInput, &str, &str)> = vec![
        (input("monthly"), "kind", "expected holiday, weekly"),
        (
            CalendarInput {
                window: Some("22:00-06:00".into()),
                ..input("holiday")
            },
            "kind",
            "does not take \"window\"",
        ),
        (input("holiday"), "dates", "at least one date"),
        (
            CalendarInput {
                dates: Some(vec!["2030-02-30".into()]),
                ..input("holiday")
            },
            "dates",
            "\"2030-02-30\" is not a date",
        ),
        (
            CalendarInput {
                days: Some(vec!["Caturday".into()]),
                ..input("weekly")
            },
            "days",
            "not a weekday",
        ),
        (
            CalendarInput {
                window: Some("22:00".into()),
                ..input("daily")
            },
            "window",
            "not a window",
        ),
        (
            CalendarInput {
                window: Some("25:00-06:00".into()),
                ..input("daily")
            },
            "window",
            "not a time of day",
        ),
        (
            CalendarInput {
                window: Some("06:00-06:00".into()),
                ..input("daily")
            },
            "window",
            "is empty",
        ),
        (
            CalendarInput {
                cron: Some("0 0 25 * * ?".into()),
                ..input("cron")
            },
            "cron",
            "",
        ),
        (
            CalendarInput {
                rrule: Some("FREQ=SOMETIMES".into()),
                ..input("rrule")
            },
            "rrule",
            "",
        ),
        (
            CalendarInput {
                rrule: Some("FREQ=DAILY".into()),
                duration: Some("0s".into()),
                ..input("rrule")
            },
            "duration",
            "more than 0",
        ),
        (
            CalendarInput {
                tz: Some("Mars/Olympus".into()),
                ..input("weekly")
            },
            "tz",
            "not an IANA time zone",
        ),
        (
            CalendarInput {
                base: Some("c".into()),
                days: Some(vec!["MON".into()]),
                ..input("weekly")
            },
            "base",
            "its own base",
        ),
    ];
    for (given, field, says) in cases {
        let e = given.clone().into_def("c", now).unwrap_err();
        assert_eq!(e.field, field, "{given:?}: {e}");
        assert!(e.message.contains(says), "{given:?}: {e}");
    }
    let e = CalendarInput {
        days: Some(vec!["MON".into()]),
        ..input("weekly")
    }
    .into_def("no spaces", now)
    .unwrap_err();
    assert_eq!(e.field, "name");
}

#[test]
fn an_rrule_without_dtstart_starts_the_local_day_it_is_stored() {
    let d = CalendarInput {
        tz: Some("Asia/Tokyo".into()),
        rrule: Some("FREQ=DAILY".into()),
        ..input("rrule")
    }
    // 2030-01-01T20:00Z is 05:00 on 2030-01-02 in Tokyo.
    .into_def("c", ms("2030-01-01T20:00:00Z"))
    .unwrap();
    match d.rule {
        CalendarRule::Rrule {
            dtstart,
            duration_ms,
            ..
        } => {
            assert_eq!(dtstart.to_string(), "2030-01-02 00:00:00");
            assert_eq!(duration_ms, 1000);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_stored_form_reads_back_as_it_was_written() {
    let d = def(
        "nights",
        CalendarInput {
            tz: Some("Europe/Berlin".into()),
            window: Some("22:00-06:00".into()),
            invert: Some(true),
            ..input("daily")
        },
    );
    let text = serde_json::to_string(&d).unwrap();
    assert!(text.contains("\"kind\":\"daily\""), "{text}");
    assert_eq!(serde_json::from_str::<CalendarDef>(&text).unwrap(), d);
}

fn every_second() -> TriggerSpec {
    TriggerSpec {
        kind: TriggerKind::Every {
            period_ms: 1000,
            repeat: None,
        },
        start_ms: Some(ms("2030-01-01T10:00:00Z")),
        end_ms: None,
        misfire: MisfirePolicy::FireNow,
        jitter_ms: 0,
        calendars: vec!["c".into()],
    }
}

fn only(d: CalendarDef) -> Arc<Exclusion> {
    CalendarSet::new([d]).exclusion(&["c".into()]).unwrap()
}

#[test]
fn a_trigger_skips_excluded_times_without_misfiring_them() {
    let even = only(def(
        "c",
        CalendarInput {
            cron: Some("0/2 * * * * ?".into()),
            ..input("cron")
        },
    ));
    let spec = every_second();
    let start = ms("2030-01-01T10:00:00Z");
    assert_eq!(
        spec.first_due_excluding(start, Some(&even)).unwrap(),
        Some(start + 1000)
    );
    let now = start + 5_000;
    let plan = spec
        .plan_excluding(
            start + 1000,
            now,
            now,
            &MisfireLimits::default(),
            Some(&even),
        )
        .unwrap();
    assert_eq!(plan.run, [start + 1000, start + 3000, start + 5000]);
    assert!(plan.misfired.is_empty() && plan.misfired_total == 0);
    assert_eq!(plan.next, Some(start + 7000));
}

#[test]
fn a_holiday_moves_a_daily_trigger_to_the_next_included_day_in_one_step() {
    let xmas = only(def(
        "c",
        CalendarInput {
            dates: Some(vec!["2030-12-25".into()]),
            ..input("holiday")
        },
    ));
    let spec = TriggerSpec {
        kind: TriggerKind::Cron {
            expr: "0 0 9 * * ?".into(),
            tz: "UTC".into(),
        },
        start_ms: None,
        end_ms: None,
        misfire: MisfirePolicy::FireNow,
        jitter_ms: 0,
        calendars: vec!["c".into()],
    };
    assert_eq!(
        spec.first_due_excluding(ms("2030-12-24T10:00:00Z"), Some(&xmas))
            .unwrap(),
        Some(ms("2030-12-26T09:00:00Z"))
    );
    // An every-second trigger crosses the holiday in one jump too.
    assert_eq!(
        every_second()
            .first_due_excluding(ms("2030-12-25T00:00:00Z"), Some(&xmas))
            .unwrap(),
        Some(ms("2030-12-26T00:00:00Z"))
    );
    // A one-shot on the holiday never fires.
    let at = TriggerSpec {
        kind: TriggerKind::At(ms("2030-12-25T12:00:00Z")),
        ..spec
    };
    assert_eq!(at.first_due_excluding(0, Some(&xmas)).unwrap(), None);
}

#[test]
fn a_calendar_excluding_everything_is_an_error_not_a_hang() {
    let all = only(def(
        "c",
        CalendarInput {
            days: Some(
                ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
                    .map(String::from)
                    .to_vec(),
            ),
            ..input("weekly")
        },
    ));
    let spec = every_second();
    let e = spec
        .first_due_excluding(ms("2030-01-01T10:00:00Z"), Some(&all))
        .unwrap_err();
    assert!(e.0.contains("exclude every fire time"), "{e}");
    assert!(e.0.contains("(c)"), "{e}");
    let now = ms("2030-01-01T10:00:05Z");
    let plan = spec.plan_excluding(
        ms("2030-01-01T10:00:00Z"),
        now,
        now,
        &MisfireLimits::default(),
        Some(&all),
    );
    assert!(plan.is_err());
}
