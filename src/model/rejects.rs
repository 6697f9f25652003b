//! How many rejects a job tolerates (`[rejects]`), and the decision that it has passed them.
//!
//! A job's total is known before any chunk is worked (the plan scans every input), and a
//! job's rejects only grow as its chunks are committed. So a threshold is judged on what is
//! *certain*, after every commit: `max_count` is passed once more than that many records are
//! rejected, `max_share` once more than `max_share × total` are. A job is never stopped on a
//! projection from the records seen so far (a file whose bad rows sit at its start would be
//! stopped wrongly); it stops as soon as no records still to come could bring it back under.
//! With rejects spread evenly, a job whose share is `r` over a limit of `s` stops after about
//! `s / r` of its records (5% of a file with 30% bad rows: after about a sixth of it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[rejects]`: how many rejected records the job tolerates before it fails, loading nothing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RejectsConfig {
    /// The largest share of the job's records that may be rejected, from 0 to 1 (`0.01`: 1%).
    /// More fails the job as soon as it is certain (more than this share of the job's total
    /// rejected already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share: Option<f64>,
    /// The most records that may be rejected (0: none). More fails the job at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
}

/// `[rejects]`, checked: the limits a job is judged by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The largest share of the records that may be rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share: Option<f64>,
    /// The most records that may be rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
}

impl RejectsConfig {
    /// Check the limits; errors name the key (`rejects.max_share`).
    pub fn check(&self) -> Result<Thresholds> {
        if let Some(s) = self.max_share {
            if !(0.0..=1.0).contains(&s) {
                return Err(Error::config(
                    "rejects.max_share",
                    format!("{s} is not a share from 0 to 1 (0.05 tolerates 5% of the records rejected)"),
                ));
            }
        }
        Ok(Thresholds { max_share: self.max_share, max_count: self.max_count })
    }
}

/// The counts a job has committed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Records in the committed chunks.
    pub records: u64,
    /// Of them rejected.
    pub rejected: u64,
    /// Records in the whole job (from its plan).
    pub total: u64,
}

/// Why a job was stopped by a threshold, with the figures (`stopped_by` in `summary.json`,
/// `failed.json`, `sluicebox status --json` and the notification). Field names are stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// The threshold passed: `max_share` or `max_count`.
    pub threshold: String,
    /// Its value as configured (a share for `max_share`, a count for `max_count`).
    pub limit: f64,
    /// Records rejected when the job stopped.
    pub rejected: u64,
    /// Records in the chunks committed when it stopped.
    pub records_seen: u64,
    /// Records in the whole job.
    pub records_total: u64,
    /// Chunks committed when it stopped.
    #[serde(default)]
    pub chunks_done: u32,
    /// Chunks in the plan.
    #[serde(default)]
    pub chunks_total: u32,
    /// The rule that rejected most records, and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_rule: Option<(String, u64)>,
    /// What became of the records written before the stop: `staged, not published` (the
    /// sink table is unchanged), `written in place` (a sink that cannot stage, such as
    /// DynamoDB, holds the rows of the chunks worked before the stop), or `no sink`.
    #[serde(default)]
    pub sink: String,
}

impl Thresholds {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_share.is_some() || self.max_count.is_some()
    }

    /// The threshold `seen` has certainly passed, if any: `max_count` first (it is absolute).
    pub fn passed(&self, seen: Seen) -> Option<(&'static str, f64)> {
        if let Some(max) = self.max_count.filter(|&m| seen.rejected > m) {
            return Some(("max_count", max as f64));
        }
        // `rejected > share × total`, in integers where the share is exact enough: the
        // largest count the share tolerates is floor(share × total).
        let share = self.max_share?;
        let tolerated = (share * seen.total as f64).floor() as u64;
        (seen.rejected > tolerated).then_some(("max_share", share))
    }

    /// Whether a sample whose `rejected` of `records` were rejected passes a threshold
    /// already, judged as if the job were like it (`plan`'s warning, not a stop): the
    /// threshold, and the job's likely rejects.
    pub fn sample_passes(&self, records: u64, rejected: u64, total: u64) -> Option<(&'static str, f64, u64)> {
        if records == 0 {
            return None;
        }
        let likely = (rejected as f64 / records as f64 * total.max(records) as f64).round() as u64;
        let seen = Seen { records: total.max(records), rejected: likely.max(rejected), total: total.max(records) };
        self.passed(seen).map(|(t, limit)| (t, limit, seen.rejected))
    }

    /// One line for people: `max_share 5%, max_count 100`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.max_share {
            parts.push(format!("max_share {}", percent(s)));
        }
        if let Some(c) = self.max_count {
            parts.push(format!("max_count {c}"));
        }
        match parts.is_empty() {
            true => "none (every reject tolerated)".into(),
            false => parts.join(", "),
        }
    }
}

/// `0.05` as `5%`, `0.001` as `0.1%`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    let text = format!("{p:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

impl Stop {
    /// The stop of a job whose counts `seen` passed `threshold` (`limit`), with its rejects
    /// by rule so far.
    pub fn new(threshold: &str, limit: f64, seen: Seen, by_rule: &BTreeMap<String, u64>) -> Stop {
        // The most rejects first; of equal counts, the first rule by name.
        let top_rule = by_rule.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(r, n)| (r.clone(), *n));
        Stop {
            threshold: threshold.to_string(),
            limit,
            rejected: seen.rejected,
            records_seen: seen.records,
            records_total: seen.total,
            chunks_done: 0,
            chunks_total: 0,
            top_rule,
            sink: String::new(),
        }
    }

    /// The limit as configured, for people: `5%` or `100 records`.
    pub fn limit_text(&self) -> String {
        match self.threshold.as_str() {
            "max_share" => format!("{} of {} records", percent(self.limit), self.records_total),
            _ => format!("{} records", self.limit as u64),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = match self.threshold.as_str() {
            "max_share" => self.limit.to_string(),
            _ => (self.limit as u64).to_string(),
        };
        let worked = if self.records_total > 0 { self.records_seen as f64 / self.records_total as f64 } else { 0.0 };
        write!(
            f,
            "stopped by [rejects] {} = {value} (at most {} rejected): {} records rejected of {} seen ({} of the \
             job's {} records; {} of {} chunks worked)",
            self.threshold,
            self.limit_text(),
            self.rejected,
            self.records_seen,
            percent(worked),
            self.records_total,
            self.chunks_done,
            self.chunks_total,
        )?;
        if let Some((rule, n)) = &self.top_rule {
            write!(f, "; most rejected by rule {rule} ({n})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_is_passed_only_once_no_records_to_come_could_bring_the_job_back_under() {
        let t = Thresholds { max_share: Some(0.05), max_count: None };
        // 5% of 100,000 is 5,000: the 5,000th reject is tolerated, the 5,001st is not.
        assert_eq!(t.passed(Seen { records: 20_000, rejected: 5_000, total: 100_000 }), None);
        assert_eq!(t.passed(Seen { records: 20_000, rejected: 5_001, total: 100_000 }), Some(("max_share", 0.05)));
        // Half the records seen are bad, but the rest could still be good: not certain yet.
        assert_eq!(t.passed(Seen { records: 1_000, rejected: 500, total: 100_000 }), None);
        let c = Thresholds { max_share: None, max_count: Some(10) };
        assert_eq!(c.passed(Seen { records: 11, rejected: 10, total: 100 }), None);
        assert_eq!(c.passed(Seen { records: 11, rejected: 11, total: 100 }), Some(("max_count", 10.0)));
        let zero = Thresholds { max_share: Some(0.0), max_count: None };
        assert!(zero.passed(Seen { records: 1, rejected: 1, total: 10 }).is_some(), "0 tolerates no reject");
        assert!(Thresholds::default().passed(Seen { records: 10, rejected: 10, total: 10 }).is_none());
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused_naming_the_key() {
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = RejectsConfig { max_share: Some(bad), max_count: None }.check().unwrap_err();
            assert!(e.to_string().contains("rejects.max_share"), "{e}");
        }
        assert!(RejectsConfig { max_share: Some(1.0), max_count: Some(0) }.check().is_ok());
    }

    #[test]
    fn the_stop_names_the_rule_that_rejected_most() {
        let by_rule = BTreeMap::from([("date".to_string(), 40), ("required".to_string(), 3)]);
        let s = Stop::new("max_share", 0.05, Seen { records: 200, rejected: 43, total: 500 }, &by_rule);
        assert_eq!(s.top_rule, Some(("date".to_string(), 40)));
        assert_eq!(percent(0.05), "5%");
        assert_eq!(percent(0.001), "0.1%");
    }
}
