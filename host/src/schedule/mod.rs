//! When fires happen: cron in Quartz's syntax with IANA time zones, fixed
//! intervals, one-shots. Pure computation: no clock reads, no I/O; callers pass
//! the instant to compute from, so the store's database clock stays the only clock.

pub mod cron;
pub mod interval;
pub mod trigger;
