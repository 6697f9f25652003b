//! What requests cost: AWS list prices from a versioned table (`prices/aws-us-east-1.toml`,
//! bundled; a user's copy replaces it), and the bill for a set of requests.
//!
//! Most services bill per request; DynamoDB bills per unit (a write unit per KB of an item
//! written, twice that in a transaction) and Lambda per invocation and GB-second, so a bill
//! takes [`Usage`]: the requests by `"service.Operation"` (as [`crate::backends::calls`] counts them) and
//! what the requests carried.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backends::calls::ApiCalls;
use crate::error::{Error, Result};

/// The bundled price table.
pub const BUNDLED: &str = include_str!("../../prices/aws-us-east-1.toml");

/// The price items a table must have, and what each bills.
pub const ITEMS: [&str; 11] = [
    "s3_write_request",
    "s3_read_request",
    "sqs_request",
    "dynamodb_write_unit",
    "dynamodb_read_unit",
    "lambda_request",
    "lambda_gb_second_arm64",
    "lambda_gb_second_x86_64",
    "sns_request",
    "ses_message",
    "kinesis_put_unit",
];

/// A price table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prices {
    /// The region the prices are for.
    pub region: String,
    /// When they were checked (YYYY-MM-DD).
    pub as_of: String,
    /// The currency (`USD`).
    pub currency: String,
    /// Price items by name (see [`ITEMS`]).
    #[serde(flatten)]
    pub items: BTreeMap<String, Price>,
    /// Where the table came from: `bundled` or a file's path.
    #[serde(skip)]
    pub from: String,
}

/// One price.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Price {
    /// Dollars per unit.
    pub usd: f64,
    /// What the unit is.
    pub per: String,
    /// Where the price comes from.
    pub source: String,
}

impl Prices {
    /// The table shipped with sluicebox.
    pub fn bundled() -> Prices {
        Prices::parse(BUNDLED, "bundled").expect("the bundled price table parses")
    }

    /// A user's table (`--prices FILE`).
    pub fn load(path: &Path) -> Result<Prices> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config("--prices", format!("cannot read {}: {e}", path.display())))?;
        Prices::parse(&text, &path.display().to_string())
    }

    /// Parse a table; `from` names it in errors. Every item of [`ITEMS`] must be present, with
    /// a price of zero or more.
    pub fn parse(text: &str, from: &str) -> Result<Prices> {
        let mut prices: Prices =
            toml::from_str(text).map_err(|e| Error::config(from, format!("not a price table: {}", e.message())))?;
        for item in ITEMS {
            match prices.items.get(item) {
                None => return Err(Error::config(format!("{from}: [{item}]"), "missing from the price table")),
                Some(p) if !(p.usd >= 0.0 && p.usd.is_finite()) => {
                    return Err(Error::config(format!("{from}: {item}.usd"), "must be a number of dollars, 0 or more"))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = prices.items.keys().find(|k| !ITEMS.contains(&k.as_str())) {
            return Err(Error::config(
                format!("{from}: [{extra}]"),
                format!("unknown price item; known: {}", ITEMS.join(", ")),
            ));
        }
        prices.from = from.to_string();
        Ok(prices)
    }

    /// Dollars per unit of `item`.
    pub fn usd(&self, item: &str) -> f64 {
        self.items.get(item).map_or(0.0, |p| p.usd)
    }
}

/// What a job uses: its requests, and what they carried where the bill depends on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Requests by `"service.Operation"`.
    pub requests: ApiCalls,
    /// Items written by `dynamodb.BatchWriteItem` requests (default: 25 per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_write_items: Option<u64>,
    /// Write units per item written to the sink (KB per item, rounded up; default 1).
    #[serde(default = "one")]
    pub units_per_item: f64,
    /// Lambda GB-seconds, and the functions' architecture (`arm64` or `x86_64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<LambdaUsage>,
}

fn one() -> f64 {
    1.0
}

/// Lambda time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LambdaUsage {
    /// Invocations.
    pub invocations: u64,
    /// GB-seconds of function time.
    pub gb_seconds: f64,
    /// `arm64` or `x86_64`.
    pub architecture: String,
}

/// A bill: dollars per operation and per price item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bill {
    /// Dollars by `"service.Operation"` (and `lambda.Invoke`, `lambda.Duration`).
    pub by_operation: BTreeMap<String, f64>,
    /// Units and dollars by price item.
    pub by_item: BTreeMap<String, Billed>,
    /// All of it.
    pub total_usd: f64,
}

/// Units of one price item and their dollars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Billed {
    /// Units billed.
    pub units: f64,
    /// Dollars.
    pub usd: f64,
}

/// The bill for `usage` at `prices`.
pub fn bill(usage: &Usage, prices: &Prices) -> Bill {
    let mut bill = Bill::default();
    let mut charge = |op: &str, item: &str, units: f64| {
        let usd = units * prices.usd(item);
        *bill.by_operation.entry(op.to_string()).or_default() += usd;
        let b = bill.by_item.entry(item.to_string()).or_default();
        b.units += units;
        b.usd += usd;
    };
    for (op, &n) in &usage.requests {
        let n = n as f64;
        let (service, name) = op.split_once('.').unwrap_or((op, ""));
        match service {
            "s3" => match name {
                "GetObject" | "HeadObject" => charge(op, "s3_read_request", n),
                "DeleteObject" | "DeleteObjects" | "AbortMultipartUpload" => charge(op, "s3_read_request", 0.0),
                _ => charge(op, "s3_write_request", n),
            },
            "sqs" => charge(op, "sqs_request", n),
            "sns" => charge(op, "sns_request", n),
            "ses" | "sesv2" => charge(op, "ses_message", n),
            "kinesis" => charge(op, "kinesis_put_unit", n),
            "dynamodb" => {
                let (item, units) = dynamodb_units(name, n, usage);
                charge(op, item, units);
            }
            _ => {}
        }
    }
    if let Some(l) = &usage.lambda {
        charge("lambda.Invoke", "lambda_request", l.invocations as f64);
        let item = if l.architecture == "x86_64" { "lambda_gb_second_x86_64" } else { "lambda_gb_second_arm64" };
        charge("lambda.Duration", item, l.gb_seconds);
    }
    bill.total_usd = bill.by_operation.values().sum();
    bill
}

/// The units `n` DynamoDB requests of `operation` are billed. Items of the ledger and of
/// lookups are under 1 KB (one write unit; half a read unit read eventually consistent, one
/// strongly); sink items take `usage.units_per_item`; a transaction bills twice per item
/// (the ledger's commit writes two: the job and the chunk).
fn dynamodb_units(operation: &str, n: f64, usage: &Usage) -> (&'static str, f64) {
    match operation {
        "BatchWriteItem" => {
            let items = usage.batch_write_items.map_or(n * 25.0, |i| i as f64);
            ("dynamodb_write_unit", items * usage.units_per_item)
        }
        "PutItem" | "UpdateItem" | "DeleteItem" => ("dynamodb_write_unit", n * usage.units_per_item.max(1.0)),
        "TransactWriteItems" => ("dynamodb_write_unit", n * 2.0 * 2.0),
        "GetItem" => ("dynamodb_read_unit", n),
        "BatchGetItem" => ("dynamodb_read_unit", n * 100.0 * 0.5),
        "Query" | "Scan" => ("dynamodb_read_unit", n * 0.5),
        // Table and TTL management requests are free.
        _ => ("dynamodb_write_unit", 0.0),
    }
}

/// Dollars per `"service.Operation"` for a finished job's requests (its summary's
/// `api_calls`), `items_written` of them to the sink (the items its `BatchWriteItem`s carried).
pub fn request_costs(calls: &ApiCalls, items_written: u64, prices: &Prices) -> BTreeMap<String, f64> {
    request_costs_per_item(calls, items_written, 1.0, prices)
}

/// [`request_costs`] with each sink item billed `units_per_item` write units (the sink's
/// consumed write units per item written, for items over 1 KB; never under one).
pub fn request_costs_per_item(
    calls: &ApiCalls,
    items_written: u64,
    units_per_item: f64,
    prices: &Prices,
) -> BTreeMap<String, f64> {
    let batched = calls.contains_key("dynamodb.BatchWriteItem").then_some(items_written);
    let units_per_item = if units_per_item.is_finite() { units_per_item.max(1.0) } else { 1.0 };
    let usage = Usage { requests: calls.clone(), batch_write_items: batched, units_per_item, lambda: None };
    bill(&usage, prices).by_operation
}

/// Thousands separated, for a person: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Dollars formatted for a person: `$0.0123`, `$12.35`.
pub fn dollars(usd: f64) -> String {
    if usd == 0.0 {
        "$0".into()
    } else if usd < 0.00001 {
        "<$0.00001".into()
    } else if usd < 0.01 {
        format!("${usd:.5}")
    } else if usd < 100.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(pairs: &[(&str, u64)]) -> ApiCalls {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn sink_items_of_several_write_units_cost_as_many() {
        let p = Prices::bundled();
        let c = calls(&[("dynamodb.BatchWriteItem", 4), ("dynamodb.PutItem", 100)]);
        let one = request_costs(&c, 100, &p);
        let three = request_costs_per_item(&c, 100, 3.0, &p);
        for op in ["dynamodb.BatchWriteItem", "dynamodb.PutItem"] {
            assert!((three[op] - 3.0 * one[op]).abs() < 1e-12, "{op}: {three:?} vs {one:?}");
        }
        assert_eq!(request_costs_per_item(&c, 100, 0.04, &p), one, "never under a unit an item");
        assert_eq!(request_costs_per_item(&c, 100, f64::NAN, &p), one);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_bundled_table_has_every_item_with_its_source() {
        let p = Prices::bundled();
        assert_eq!(p.region, "us-east-1");
        for item in ITEMS {
            let price = &p.items[item];
            assert!(price.usd > 0.0, "{item}");
            assert!(price.source.starts_with("https://aws.amazon.com/"), "{item}: {}", price.source);
        }
    }

    #[test]
    fn requests_are_billed_by_their_service_and_unit() {
        let p = Prices::bundled();
        let usage = Usage {
            requests: calls(&[
                ("s3.GetObject", 1000),
                ("s3.PutObject", 1000),
                ("s3.DeleteObjects", 5),
                ("sqs.SendMessageBatch", 1_000_000),
                ("dynamodb.BatchWriteItem", 40_000),
                ("dynamodb.TransactWriteItems", 10),
            ]),
            batch_write_items: Some(1_000_000),
            units_per_item: 1.0,
            lambda: Some(LambdaUsage { invocations: 1_000_000, gb_seconds: 1000.0, architecture: "arm64".into() }),
        };
        let b = bill(&usage, &p);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(b.by_operation["s3.GetObject"], 0.0004), "{b:?}");
        assert!(close(b.by_operation["s3.PutObject"], 0.005));
        assert!(close(b.by_operation["s3.DeleteObjects"], 0.0));
        assert!(close(b.by_operation["sqs.SendMessageBatch"], 0.40));
        // A million items of 1 KB, however they were batched.
        assert!(close(b.by_operation["dynamodb.BatchWriteItem"], 0.625));
        assert!(close(b.by_item["dynamodb_write_unit"].units, 1_000_040.0));
        assert!(close(b.by_operation["lambda.Invoke"], 0.20));
        assert!(close(b.by_operation["lambda.Duration"], 1000.0 * 0.0000133334));
        assert!(close(b.total_usd, b.by_operation.values().sum()));
    }

    #[test]
    fn a_users_table_must_name_every_item_and_only_known_ones() {
        let missing = BUNDLED.replace("[ses_message]", "[ses_message_typo]");
        let e = Prices::parse(&missing, "mine.toml").unwrap_err().to_string();
        assert!(e.contains("mine.toml") && e.contains("ses_message"), "{e}");
        let negative = BUNDLED.replace("usd = 0.0000004\nper = \"request (each", "usd = -1\nper = \"request (each");
        let e = Prices::parse(&negative, "mine.toml").unwrap_err().to_string();
        assert!(e.contains("sqs_request.usd"), "{e}");
        let cheaper = BUNDLED.replace("usd = 0.000005\n", "usd = 0.000001\n");
        assert_eq!(Prices::parse(&cheaper, "mine.toml").unwrap().usd("s3_write_request"), 0.000001);
    }
}
