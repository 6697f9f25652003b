//! How long a cloud request takes: a latency distribution per service (log-normal, given by
//! its median and 99th percentile), which the forecast's Lambda time uses at its mean, and
//! which [`SimulatedLatency`] adds to each request in tests and the bench (a test and bench
//! tool, never on by default: see `backends::aws::latency` for the layer that sleeps).

use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable that turns on simulated latency for the AWS clients of a process
/// (the command line's and a Lambda main's): see [`SimulatedLatency::parse`].
pub const VAR: &str = "SLUICEBOX_SIMULATED_LATENCY";

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874_040_841;

/// A request's latency: log-normal, with this median and 99th percentile (equal: a fixed
/// latency).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// The median.
    pub median: Duration,
    /// The 99th percentile (at least the median).
    pub p99: Duration,
}

impl Latency {
    /// A DynamoDB write inside its region: 5 ms at the median, 25 ms at the 99th percentile.
    pub const DYNAMODB: Latency = Latency::of_ms(5, 25);
    /// An S3 request (a ranged GET's first byte, a small PUT): 20 ms, 100 ms at p99.
    pub const S3: Latency = Latency::of_ms(20, 100);
    /// An SQS request: 8 ms, 40 ms at p99.
    pub const SQS: Latency = Latency::of_ms(8, 40);
    /// Any other service (SNS, Kinesis, SES): 10 ms, 50 ms at p99.
    pub const OTHER: Latency = Latency::of_ms(10, 50);

    /// A latency of `median` ms, `p99` ms at the 99th percentile.
    pub const fn of_ms(median: u64, p99: u64) -> Latency {
        Latency { median: Duration::from_millis(median), p99: Duration::from_millis(p99) }
    }

    /// The typical latency of a request to `service` (as named in SigV4 and in the summary's
    /// `api_calls`: `dynamodb`, `s3`, `sqs`, …).
    pub fn typical(service: &str) -> Latency {
        match service {
            "dynamodb" => Latency::DYNAMODB,
            "s3" => Latency::S3,
            "sqs" => Latency::SQS,
            _ => Latency::OTHER,
        }
    }

    /// The log-normal's σ.
    fn sigma(&self) -> f64 {
        let (m, p) = (self.median.as_secs_f64(), self.p99.as_secs_f64());
        if m <= 0.0 || p <= m {
            return 0.0;
        }
        (p / m).ln() / Z99
    }

    /// The mean, seconds: `median × e^(σ²/2)` (6.35 ms for 5 ms median, 25 ms at p99).
    pub fn mean_s(&self) -> f64 {
        self.median.as_secs_f64() * (self.sigma().powi(2) / 2.0).exp()
    }

    /// One latency drawn from the distribution.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        // Box–Muller: a standard normal from two uniforms (the first never 0).
        let (u1, u2) = (1.0 - rng.f64(), rng.f64());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64(self.median.as_secs_f64() * (self.sigma() * z).exp())
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(f, "{} ms median, {} ms p99 (mean {:.2} ms)", ms(self.median), ms(self.p99), self.mean_s() * 1e3)
    }
}

/// Latency added to every AWS request of a process, for tests and the bench: it makes the
/// emulator answer as slowly as the cloud does, so that the time a function spends waiting
/// can be measured here. Never on by default; turned on by [`VAR`] or by a test.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedLatency {
    /// Per service (`dynamodb`, `s3`, `sqs`, `sns`, `kinesis`, `email`); a service not listed
    /// answers as fast as the emulator does.
    pub services: Vec<(String, Latency)>,
    /// Write units a second above which `PutItem` and `BatchWriteItem` are refused with
    /// `ProvisionedThroughputExceededException`, as a provisioned table refuses them (an item
    /// one unit; a bucket holding one second of them).
    pub write_capacity: Option<f64>,
    /// Tables (a name, or a pattern with `*` at its start or end) whose `PutItem` and
    /// `BatchWriteItem` requests are answered by the layer as DynamoDB answers a successful
    /// write, without reaching the emulator: the emulator serves DynamoDB one request at a
    /// time, a few milliseconds each, which would otherwise hide the latency being measured.
    /// Nothing is stored: only for measuring time.
    pub stand_in: Option<String>,
    /// The random draws' seed.
    pub seed: u64,
}

impl SimulatedLatency {
    /// The three services at their typical latencies ([`Latency::DYNAMODB`], [`Latency::S3`],
    /// [`Latency::SQS`]).
    pub fn typical() -> Self {
        SimulatedLatency {
            services: ["dynamodb", "s3", "sqs"].iter().map(|s| (s.to_string(), Latency::typical(s))).collect(),
            write_capacity: None,
            stand_in: None,
            seed: 28,
        }
    }

    /// The latency of `service`, if it has one.
    pub fn of(&self, service: &str) -> Option<Latency> {
        self.services.iter().find(|(s, _)| s == service).map(|(_, l)| *l)
    }

    /// Whether `table` is answered by the layer (see [`SimulatedLatency::stand_in`]).
    pub fn stands_in_for(&self, table: &str) -> bool {
        let Some(pattern) = self.stand_in.as_deref() else { return false };
        match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
            (Some(end), _) => table.ends_with(end),
            (_, Some(start)) => table.starts_with(start),
            _ => table == pattern,
        }
    }

    /// The setting [`VAR`] holds, or `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(VAR) {
            Ok(v) if !v.trim().is_empty() => SimulatedLatency::parse(&v).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(VAR, "is not UTF-8")),
        }
    }

    /// Parse a setting: comma-separated entries, each one of
    ///
    /// - `typical`: DynamoDB, S3 and SQS at their typical latencies ([`Latency::typical`]);
    /// - `SERVICE=MEDIAN/P99` (e.g. `dynamodb=5ms/25ms`; units `us`, `ms`, `s`) or
    ///   `SERVICE=FIXED`: that service's latency;
    /// - `dynamodb_wcu=N`: throttle writes above N write units a second;
    /// - `stand_in=TABLE` (`*` at either end: a pattern): answer that table's writes here;
    /// - `seed=N`: the random draws' seed.
    ///
    /// A wrong entry is an error naming [`VAR`].
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::config(VAR, reason);
        let mut sim = SimulatedLatency { services: Vec::new(), ..SimulatedLatency::typical() };
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "typical" {
                for (s, l) in SimulatedLatency::typical().services {
                    sim.set(&s, l);
                }
                continue;
            }
            let Some((key, value)) = entry.split_once('=') else {
                return Err(bad(format!("{entry:?} is not KEY=VALUE (e.g. dynamodb=5ms/25ms)")));
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "dynamodb_wcu" => {
                    let n: f64 = value.parse().ok().filter(|n: &f64| *n > 0.0 && n.is_finite()).ok_or_else(|| {
                        bad(format!("dynamodb_wcu={value:?}: expected a positive number of write units a second"))
                    })?;
                    sim.write_capacity = Some(n);
                }
                "stand_in" if !value.is_empty() => sim.stand_in = Some(value.to_string()),
                "seed" => sim.seed = value.parse().map_err(|_| bad(format!("seed={value:?}: expected a number")))?,
                "dynamodb" | "s3" | "sqs" | "sns" | "kinesis" | "email" => {
                    let latency = parse_latency(value).map_err(|why| bad(format!("{key}={value:?}: {why}")))?;
                    sim.set(key, latency);
                }
                _ => {
                    return Err(bad(format!(
                        "unknown entry {key:?} (expected dynamodb, s3, sqs, sns, kinesis, email, \
                         dynamodb_wcu, stand_in, seed or typical)"
                    )))
                }
            }
        }
        Ok(sim)
    }

    fn set(&mut self, service: &str, latency: Latency) {
        self.services.retain(|(s, _)| s != service);
        self.services.push((service.to_string(), latency));
    }
}

/// `5ms/25ms` or `5ms`.
fn parse_latency(value: &str) -> std::result::Result<Latency, String> {
    let (median, p99) = value.split_once('/').unwrap_or((value, value));
    let (median, p99) = (parse_duration(median)?, parse_duration(p99)?);
    if p99 < median {
        return Err("the 99th percentile is below the median".into());
    }
    if median.is_zero() && !p99.is_zero() {
        return Err("a zero median needs a zero 99th percentile".into());
    }
    Ok(Latency { median, p99 })
}

/// `250us`, `5ms`, `0.5s`.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("{text:?} has no unit (us, ms or s)"));
    };
    let n: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 5ms"))?;
    if !(0.0..=60.0).contains(&(n * scale)) {
        return Err(format!("{text:?} is not between 0 and 60 s"));
    }
    Ok(Duration::from_secs_f64(n * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_normal_has_its_median_and_p99_and_the_mean_the_forecast_uses() {
        let l = Latency::DYNAMODB;
        assert!((l.mean_s() * 1e3 - 6.35).abs() < 0.01, "{}", l.mean_s());
        let mut rng = fastrand::Rng::with_seed(7);
        let mut draws: Vec<f64> = (0..100_000).map(|_| l.sample(&mut rng).as_secs_f64() * 1e3).collect();
        draws.sort_by(f64::total_cmp);
        let (median, p99) = (draws[50_000], draws[99_000]);
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((median - 5.0).abs() < 0.1, "median {median}");
        assert!((p99 - 25.0).abs() < 1.0, "p99 {p99}");
        assert!((mean - 6.35).abs() < 0.1, "mean {mean}");
        let fixed = Latency::of_ms(3, 3);
        assert_eq!(fixed.sample(&mut rng), Duration::from_millis(3));
        assert!((fixed.mean_s() - 0.003).abs() < 1e-12);
    }

    #[test]
    fn the_setting_parses_and_a_bad_one_names_the_variable() {
        let sim =
            SimulatedLatency::parse("dynamodb=5ms/25ms, s3=20ms, dynamodb_wcu=400, stand_in=*-sink, seed=3").unwrap();
        assert_eq!(sim.of("dynamodb"), Some(Latency::DYNAMODB));
        assert_eq!(sim.of("s3"), Some(Latency::of_ms(20, 20)));
        assert_eq!(sim.of("sqs"), None, "a service not named is not slowed");
        assert_eq!((sim.write_capacity, sim.seed), (Some(400.0), 3));
        assert!(sim.stands_in_for("bench-1-sink") && !sim.stands_in_for("bench-1-ledger"));
        assert_eq!(SimulatedLatency::parse("typical").unwrap().of("sqs"), Some(Latency::SQS));
        let quarter = Duration::from_micros(250);
        assert_eq!(
            SimulatedLatency::parse("s3=250us").unwrap().of("s3"),
            Some(Latency { median: quarter, p99: quarter })
        );
        for bad in ["dynamodb=5", "dynamodb=25ms/5ms", "dynamo=5ms", "dynamodb_wcu=-1", "5ms", "seed=x", "s3=1h"] {
            let err = SimulatedLatency::parse(bad).unwrap_err().to_string();
            assert!(err.contains(VAR), "{bad}: {err}");
        }
    }
}
