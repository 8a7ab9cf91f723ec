//! Parsing the fields of a Quartz cron expression into [`super::Spec`].

use super::*;

pub(super) fn parse_day_of_month(text: &str) -> Result<DayField<DayOfMonthRule>, TokenError> {
    if text == "?" {
        return Ok(DayField::NoSpec);
    }
    if !text.contains(['L', 'W']) {
        return parse_list(CronField::DayOfMonth, text)
            .map(|set| DayField::Rule(DayOfMonthRule::Days(set)));
    }
    if text.contains(',') {
        return Err(TokenError::new(
            text,
            "'L' and 'W' cannot be combined with other days in a list",
        ));
    }
    if let Some(rest) = text.strip_prefix('L') {
        let (rest, weekday) = match rest.strip_suffix('W') {
            Some(inner) => (inner, true),
            None => (rest, false),
        };
        let offset = match rest {
            "" => 0,
            _ => {
                let digits = rest
                    .strip_prefix('-')
                    .ok_or_else(|| TokenError::new(text, "expected 'L', 'L-n', 'LW' or 'L-nW'"))?;
                let offset = parse_number(text, digits)?;
                if offset > 30 {
                    return Err(TokenError::new(
                        text,
                        "the offset from the last day must be at most 30",
                    ));
                }
                offset
            }
        };
        if weekday && offset > 27 {
            // The target day would be 0 or less in February, where Quartz's
            // walk bounces between two months forever.
            return Err(TokenError::new(
                text,
                "with 'W' the offset from the last day must be at most 27",
            ));
        }
        return Ok(DayField::Rule(DayOfMonthRule::Last { offset, weekday }));
    }
    let digits = text
        .strip_suffix('W')
        .ok_or_else(|| TokenError::new(text, "'W' must follow a day number, as in '15W'"))?;
    let day = parse_number(text, digits)?;
    check_range(CronField::DayOfMonth, text, day)?;
    Ok(DayField::Rule(DayOfMonthRule::NearestWeekday(day)))
}

pub(super) fn parse_day_of_week(text: &str) -> Result<DayField<DayOfWeekRule>, TokenError> {
    const FIELD: CronField = CronField::DayOfWeek;
    if text == "?" {
        return Ok(DayField::NoSpec);
    }
    if !text.contains(['L', '#']) {
        return parse_list(FIELD, text).map(|set| DayField::Rule(DayOfWeekRule::Days(set)));
    }
    if text.contains(',') {
        return Err(TokenError::new(
            text,
            "'L' and '#' cannot be combined with other days in a list",
        ));
    }
    if text == "L" {
        // Quartz reads a lone 'L' in day-of-week as 7, Saturday.
        let mut set = ValueSet::new(0);
        set.insert(7);
        return Ok(DayField::Rule(DayOfWeekRule::Days(set)));
    }
    if let Some(day) = text.strip_suffix('L') {
        let weekday = parse_value(FIELD, text, day)?.value;
        return Ok(DayField::Rule(DayOfWeekRule::Last(weekday)));
    }
    if let Some((day, nth)) = text.split_once('#') {
        let weekday = parse_value(FIELD, text, day)?.value;
        let nth = parse_number(text, nth)?;
        if !(1..=5).contains(&nth) {
            return Err(TokenError::new(text, "the number after '#' must be 1-5"));
        }
        return Ok(DayField::Rule(DayOfWeekRule::Nth { weekday, nth }));
    }
    Err(TokenError::new(text, "'L' must follow a day, as in '6L'"))
}

/// Parses a comma-separated list of `*`, values, ranges and steps.
pub(super) fn parse_list(field: CronField, text: &str) -> Result<ValueSet, TokenError> {
    let mut set = ValueSet::new(if field == CronField::Year {
        field.min()
    } else {
        0
    });
    for item in text.split(',') {
        parse_item(field, item, &mut set)?;
    }
    if set.is_empty() {
        return Err(TokenError::new(text, "matches no value"));
    }
    Ok(set)
}

pub(super) fn parse_item(
    field: CronField,
    item: &str,
    set: &mut ValueSet,
) -> Result<(), TokenError> {
    if item.is_empty() {
        return Err(TokenError::new(item, "empty list item"));
    }
    if item == "?" {
        let reason = match field {
            CronField::DayOfMonth | CronField::DayOfWeek => "'?' must be the whole field",
            _ => "'?' is only allowed in day-of-month or day-of-week",
        };
        return Err(TokenError::new(item, reason));
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_number(item, step)?)),
        None => (item, None),
    };
    if let Some(step) = step
        && !(1..=field.max_step()).contains(&step)
    {
        return Err(TokenError::new(
            item,
            format!("the step must be between 1 and {}", field.max_step()),
        ));
    }
    let (start, end, named) = if range == "*" {
        (field.min(), field.max(), false)
    } else if let Some((low, high)) = range.split_once('-') {
        let low = parse_value(field, item, low)?;
        let high = parse_value(field, item, high)?;
        (low.value, high.value, low.named || high.named)
    } else {
        let single = parse_value(field, item, range)?;
        // `a/n` runs from a to the top of the field; a bare value is just itself.
        let end = if step.is_some() {
            field.max()
        } else {
            single.value
        };
        (single.value, end, single.named)
    };
    if named && step.is_some() {
        // Quartz silently drops a step written after a name; refuse rather
        // than compute different fire times.
        return Err(TokenError::new(
            item,
            "a step cannot follow a day or month name",
        ));
    }
    let step = step.unwrap_or(1);
    if start <= end {
        let mut value = start;
        while value <= end {
            set.insert(value);
            value += step;
        }
    } else if field == CronField::Year {
        return Err(TokenError::new(
            item,
            "the start year is after the end year",
        ));
    } else {
        // Wrap-around range such as 22-2: continue past the top of the field
        // and fold back, the way Quartz does.
        let span = field.max() - field.min() + 1;
        let mut value = start;
        while value <= end + span {
            set.insert(field.min() + (value - field.min()) % span);
            value += step;
        }
    }
    Ok(())
}

pub(super) struct FieldValue {
    value: i64,
    named: bool,
}

/// Parses a number or (for month and day-of-week) a three-letter name.
pub(super) fn parse_value(
    field: CronField,
    token: &str,
    text: &str,
) -> Result<FieldValue, TokenError> {
    if let Some(index) = field.names().iter().position(|name| *name == text) {
        // Months count from 1 = JAN, weekdays from 1 = SUN.
        return Ok(FieldValue {
            value: index as i64 + 1,
            named: true,
        });
    }
    if !text.is_empty() && !text.bytes().all(|b| b.is_ascii_digit()) && !field.names().is_empty() {
        let kind = if field == CronField::Month {
            "a month"
        } else {
            "a day"
        };
        return Err(TokenError::new(
            token,
            format!("{text:?} is not {kind} number or name"),
        ));
    }
    let value = parse_number(token, text)?;
    check_range(field, token, value)?;
    Ok(FieldValue {
        value,
        named: false,
    })
}

pub(super) fn check_range(field: CronField, token: &str, value: i64) -> Result<(), TokenError> {
    if (field.min()..=field.max()).contains(&value) {
        Ok(())
    } else {
        Err(TokenError::new(
            token,
            format!(
                "{value} is out of range; {} values must be between {} and {}",
                field.name(),
                field.min(),
                field.max()
            ),
        ))
    }
}

/// Parses an unsigned decimal number, refusing anything that is not one.
pub(super) fn parse_number(token: &str, text: &str) -> Result<i64, TokenError> {
    if text.is_empty() {
        return Err(TokenError::new(token, "expected a number"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::new(token, format!("{text:?} is not a number")));
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 9 {
        return Err(TokenError::new(token, format!("{text} is too large")));
    }
    Ok(significant.parse().unwrap_or(0))
}
