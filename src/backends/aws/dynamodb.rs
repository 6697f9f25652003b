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

/// Create a DynamoDB table (on-demand capacity) with string key attributes `keys` (partition
/// key first, then an optional sort key) if it does not exist, and wait until it is active.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str, keys: &[&str]) -> Result<()> {
    use aws_sdk_dynamodb::client::Waiters;
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let fail =
        |e: crate::error::BoxError| Error::backend(crate::error::Backend::Dynamodb, format!("CreateTable {table}"), e);
    let mut req = client.create_table().table_name(table).billing_mode(BillingMode::PayPerRequest);
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
    match req.send().await {
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
    fn backoff_grows_with_jitter_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(50));
        assert!(backoff(1) >= Duration::from_millis(25));
        assert!(backoff(30) <= Duration::from_secs(5));
        assert!(backoff(30) >= Duration::from_millis(2500));
    }
}
