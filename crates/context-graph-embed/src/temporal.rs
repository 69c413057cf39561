//! `temporal`: vectors of an array's creation time, for the temporal slots.
//!
//! Both kinds are unit vectors of (cos, sin) pairs, so the store's cosine of two of them is
//! the mean of `cos(w * dt)` over their frequencies: a function of the time between the two
//! instants only.
//!
//! - `recent` (E2): frequencies whose periods are spaced evenly on a log scale from one hour
//!   to twenty years. Two instants minutes apart score near 1; the score falls as they move
//!   apart, over hours, days and years. A query made now ranks recent memories first.
//! - `periodic` (E3): the day, the week and the year, each with its first harmonics (in UTC).
//!   Two instants at the same hour of the day, on the same weekday or in the same season
//!   score high whatever years lie between them.

use chrono::{DateTime, Utc};

/// Which features of the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    Recent,
    Periodic,
}

const HOUR: f64 = 3_600.0;
const DAY: f64 = 86_400.0;
const WEEK: f64 = 7.0 * DAY;
const YEAR: f64 = 365.2425 * DAY;

/// A temporal encoder of a given width.
#[derive(Debug, Clone)]
pub struct Temporal {
    kind: TemporalKind,
    dims: usize,
    /// The angular frequency of each (cos, sin) pair, radians per second.
    omegas: Vec<f64>,
}

impl Temporal {
    /// An encoder of `kind` for a dense slot of `dims` values (at least 2; an odd last value
    /// stays 0).
    pub fn new(kind: TemporalKind, dims: usize) -> Result<Temporal, String> {
        if dims < 2 {
            return Err(format!("a temporal vector needs at least 2 values, the slot has {dims}"));
        }
        let pairs = dims / 2;
        let tau = std::f64::consts::TAU;
        let omegas = match kind {
            TemporalKind::Recent => {
                let (shortest, longest) = (HOUR, 20.0 * YEAR);
                (0..pairs)
                    .map(|j| {
                        let t = if pairs == 1 { 0.0 } else { j as f64 / (pairs - 1) as f64 };
                        tau / (shortest * (longest / shortest).powf(t))
                    })
                    .collect()
            }
            // Harmonic h of cycle c, taken round robin: day 1, week 1, year 1, day 2, ...
            TemporalKind::Periodic => (0..pairs)
                .map(|j| {
                    let period = [DAY, WEEK, YEAR][j % 3];
                    tau * (j / 3 + 1) as f64 / period
                })
                .collect(),
        };
        Ok(Temporal { kind, dims, omegas })
    }

    pub fn kind(&self) -> TemporalKind {
        self.kind
    }

    /// The vector of `at`.
    pub fn encode(&self, at: DateTime<Utc>) -> Vec<f32> {
        // Seconds since the epoch, with the sub-second part; f64 keeps microseconds for
        // centuries, and the angle is reduced in f64 before it becomes an f32.
        let t = at.timestamp() as f64 + at.timestamp_subsec_nanos() as f64 * 1e-9;
        let scale = 1.0 / (self.omegas.len() as f64).sqrt();
        let mut out = vec![0f32; self.dims];
        for (j, &w) in self.omegas.iter().enumerate() {
            let angle = (w * t).rem_euclid(std::f64::consts::TAU);
            out[2 * j] = (angle.cos() * scale) as f32;
            out[2 * j + 1] = (angle.sin() * scale) as f32;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn recent_decays_with_distance_and_periodic_repeats() {
        let t0 = Utc.with_ymd_and_hms(2026, 3, 4, 9, 30, 0).unwrap();
        let recent = Temporal::new(TemporalKind::Recent, 64).unwrap();
        let r = |d: chrono::Duration| cos(&recent.encode(t0), &recent.encode(t0 + d));
        assert!((r(chrono::Duration::zero()) - 1.0).abs() < 1e-5);
        let (minute, day, month, decade) = (
            r(chrono::Duration::minutes(1)),
            r(chrono::Duration::days(1)),
            r(chrono::Duration::days(30)),
            r(chrono::Duration::days(3650)),
        );
        assert!(
            minute > 0.99 && minute > day && day > month && month > decade,
            "{minute} {day} {month} {decade}"
        );

        let periodic = Temporal::new(TemporalKind::Periodic, 64).unwrap();
        let p = |d: chrono::Duration| cos(&periodic.encode(t0), &periodic.encode(t0 + d));
        let next_year_same_weekday_hour = p(chrono::Duration::weeks(52));
        let same_year_off_hours = p(chrono::Duration::hours(12) + chrono::Duration::days(3));
        assert!(next_year_same_weekday_hour > same_year_off_hours + 0.3);
        assert_eq!(Temporal::new(TemporalKind::Recent, 5).unwrap().encode(t0)[4], 0.0);
        assert!(Temporal::new(TemporalKind::Periodic, 1).is_err());
    }
}
