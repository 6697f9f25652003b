//! What the DynamoDB ledger, sink and lookup share: table creation, attribute conversion,
//! backoff and error mapping.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Number, Value};

use crate::error::{Error, Result};

/// A DynamoDB failure, with what was being done.
pub fn error(context: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    super::service_error(crate::error::Backend::Dynamodb, context, e)
}

/// Rounds in a row without a single item written before a write gives up.
pub const MAX_STALLED_ROUNDS: u32 = 12;

/// How a table sluicebox creates is billed (`aws setup --sink-capacity`, the template's
/// `SinkCapacityMode`): on-demand, provisioned read and write units, or on-demand with warm
/// throughput (units/s the table takes at once from its creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Capacity {
    /// On-demand (`PAY_PER_REQUEST`): the default.
    #[default]
    OnDemand,
    /// Provisioned capacity units (the sink paces its writes at the write units).
    Provisioned {
        /// Read capacity units.
        read: u64,
        /// Write capacity units.
        write: u64,
    },
    /// On-demand, pre-warmed to take this many read and write units per second at once.
    Warm {
        /// Read units per second.
        read: u64,
        /// Write units per second.
        write: u64,
    },
}

impl Capacity {
    /// Parse `on-demand`, `provisioned:READ,WRITE` or `warm:READ,WRITE` (units, at least 1);
    /// `key` names the flag or setting in errors.
    pub fn parse(text: &str, key: &str) -> Result<Capacity> {
        let bad = |why: &str| {
            Error::config(key, format!("{text:?} {why}: give on-demand, provisioned:READ,WRITE or warm:READ,WRITE"))
        };
        let (mode, units) = text.split_once(':').unwrap_or((text, ""));
        let pair = || -> Result<(u64, u64)> {
            let (r, w) = units.split_once(',').ok_or_else(|| bad("needs read and write units"))?;
            let unit = |u: &str| u.trim().parse::<u64>().ok().filter(|n| *n > 0);
            match (unit(r), unit(w)) {
                (Some(read), Some(write)) => Ok((read, write)),
                _ => Err(bad("has units that are not whole numbers of at least 1")),
            }
        };
        match mode {
            "on-demand" if units.is_empty() => Ok(Capacity::OnDemand),
            "provisioned" => pair().map(|(read, write)| Capacity::Provisioned { read, write }),
            "warm" => pair().map(|(read, write)| Capacity::Warm { read, write }),
            _ => Err(bad("is not a capacity mode")),
        }
    }
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capacity::OnDemand => f.write_str("on-demand"),
            Capacity::Provisioned { read, write } => write!(f, "provisioned: {read} read, {write} write units"),
            Capacity::Warm { read, write } => {
                write!(f, "on-demand, warm throughput {read} read, {write} write units/s")
            }
        }
    }
}

/// The `CreateTable` request for `table` with `keys` (string attributes, the hash key first,
/// then a range key) and `capacity`.
pub fn create_table_request(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[&str],
    capacity: Capacity,
) -> Result<aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput, ScalarAttributeType,
        WarmThroughput,
    };
    let fail =
        |e: crate::error::BoxError| Error::backend(crate::error::Backend::Dynamodb, format!("CreateTable {table}"), e);
    let units = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut req = client.create_table().table_name(table);
    req = match capacity {
        Capacity::OnDemand => req.billing_mode(BillingMode::PayPerRequest),
        Capacity::Provisioned { read, write } => {
            let throughput = ProvisionedThroughput::builder()
                .read_capacity_units(units(read))
                .write_capacity_units(units(write))
                .build()
                .map_err(|e| fail(e.into()))?;
            req.billing_mode(BillingMode::Provisioned).provisioned_throughput(throughput)
        }
        Capacity::Warm { read, write } => {
            let warm = WarmThroughput::builder()
                .read_units_per_second(units(read))
                .write_units_per_second(units(write))
                .build();
            req.billing_mode(BillingMode::PayPerRequest).warm_throughput(warm)
        }
    };
    for (i, name) in keys.iter().enumerate() {
        let kind = if i == 0 { KeyType::Hash } else { KeyType::Range };
        let key =
            KeySchemaElement::builder().attribute_name(*name).key_type(kind).build().map_err(|e| fail(e.into()))?;
        let attr = AttributeDefinition::builder()
            .attribute_name(*name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| fail(e.into()))?;
        req = req.key_schema(key).attribute_definitions(attr);
    }
    Ok(req)
}

/// Create a DynamoDB table (on-demand capacity) with string key attributes `keys` (partition
/// key first, then an optional sort key) if it does not exist, and wait until it is active.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str, keys: &[&str]) -> Result<()> {
    create_table_with(client, table, keys, Capacity::OnDemand).await
}

/// [`create_table`] billed as `capacity` says. An existing table is left as it is.
pub async fn create_table_with(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[&str],
    capacity: Capacity,
) -> Result<()> {
    use aws_sdk_dynamodb::client::Waiters;
    let fail =
        |e: crate::error::BoxError| Error::backend(crate::error::Backend::Dynamodb, format!("CreateTable {table}"), e);
    match create_table_request(client, table, keys, capacity)?.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(fail(e.into_service_error().into())),
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(std::time::Duration::from_secs(60))
        .await
        .map_err(|e| Error::backend(crate::error::Backend::Dynamodb, format!("waiting for table {table}"), e))?;
    Ok(())
}

/// A jittered exponential backoff: a random wait up to 25 ms × 2^round, capped at 5 s.
pub fn backoff(round: u32) -> std::time::Duration {
    let cap =
        std::time::Duration::from_millis(25).saturating_mul(1 << round.min(8)).min(std::time::Duration::from_secs(5));
    cap.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// A JSON value as a DynamoDB attribute (numbers keep their text; objects become maps).
pub fn to_attr(v: Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s),
        Value::Array(a) => AttributeValue::L(a.into_iter().map(to_attr).collect()),
        Value::Object(o) => AttributeValue::M(o.into_iter().map(|(k, v)| (k, to_attr(v))).collect()),
    }
}

/// A DynamoDB attribute as JSON (sets become arrays; binary becomes null).
pub fn from_attr(v: AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => Value::String(s),
        AttributeValue::N(n) => number(&n),
        AttributeValue::Bool(b) => Value::Bool(b),
        AttributeValue::L(l) => Value::Array(l.into_iter().map(from_attr).collect()),
        AttributeValue::M(m) => Value::Object(m.into_iter().map(|(k, v)| (k, from_attr(v))).collect()),
        AttributeValue::Ss(s) => Value::Array(s.into_iter().map(Value::String).collect()),
        AttributeValue::Ns(ns) => Value::Array(ns.iter().map(|n| number(n)).collect()),
        _ => Value::Null,
    }
}

fn number(n: &str) -> Value {
    if let Ok(i) = n.parse::<i64>() {
        return Value::Number(i.into());
    }
    n.parse::<f64>().ok().and_then(Number::from_f64).map_or_else(|| Value::String(n.to_string()), Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn values_round_trip_through_attributes() {
        let v = serde_json::json!({"a": 1, "b": 2.5, "c": "x", "d": null, "e": true, "f": [1, "y"], "g": {"h": -3}});
        assert_eq!(from_attr(to_attr(v.clone())), v);
    }

    #[test]
    fn an_error_the_sdk_does_not_model_keeps_its_message() {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        use aws_sdk_dynamodb::operation::put_item::PutItemError;
        let meta = ErrorMetadata::builder()
            .code("ValidationException")
            .message("The AttributeValue for a key attribute cannot contain an empty string value")
            .build();
        let e = error("PutItem on table t", PutItemError::generic(meta)).to_string();
        assert!(e.contains("ValidationException") && e.contains("cannot contain an empty string"), "{e}");
        assert!(e.contains("PutItem on table t"), "{e}");
    }

    #[test]
    fn capacity_modes_parse_and_become_the_create_table_request() {
        use aws_sdk_dynamodb::types::BillingMode;
        assert_eq!(Capacity::parse("on-demand", "--sink-capacity").unwrap(), Capacity::OnDemand);
        assert_eq!(
            Capacity::parse("provisioned:5,100", "--sink-capacity").unwrap(),
            Capacity::Provisioned { read: 5, write: 100 }
        );
        assert_eq!(Capacity::parse("warm:12000,4000", "k").unwrap(), Capacity::Warm { read: 12000, write: 4000 });
        for bad in ["provisioned", "provisioned:5", "provisioned:0,5", "warm:a,b", "reserved", "on-demand:1,1"] {
            let e = Capacity::parse(bad, "--sink-capacity").unwrap_err().to_string();
            assert!(e.contains("--sink-capacity") && e.contains("provisioned:READ,WRITE"), "{bad}: {e}");
        }
        let conf = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let client = aws_sdk_dynamodb::Client::new(&conf);
        let built = |c| create_table_request(&client, "t", &["_key"], c).unwrap();
        let on_demand = built(Capacity::OnDemand);
        let input = on_demand.as_input();
        assert_eq!(input.get_billing_mode(), &Some(BillingMode::PayPerRequest));
        assert!(input.get_provisioned_throughput().is_none() && input.get_warm_throughput().is_none());
        let provisioned = built(Capacity::Provisioned { read: 5, write: 100 });
        let input = provisioned.as_input();
        assert_eq!(input.get_billing_mode(), &Some(BillingMode::Provisioned));
        let units = input.get_provisioned_throughput().as_ref().unwrap();
        assert_eq!((units.read_capacity_units(), units.write_capacity_units()), (5, 100));
        let warm = built(Capacity::Warm { read: 12000, write: 4000 });
        let input = warm.as_input();
        assert_eq!(input.get_billing_mode(), &Some(BillingMode::PayPerRequest));
        let w = input.get_warm_throughput().as_ref().unwrap();
        assert_eq!((w.read_units_per_second(), w.write_units_per_second()), (Some(12000), Some(4000)));
        assert!(input.get_provisioned_throughput().is_none(), "warm throughput is on-demand");
        assert_eq!(input.get_key_schema().as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(50));
        assert!(backoff(1) >= Duration::from_millis(25));
        assert!(backoff(30) <= Duration::from_secs(5));
        assert!(backoff(30) >= Duration::from_millis(2500));
    }
}
