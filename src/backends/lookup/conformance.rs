//! The lookup-source conformance suite: every [`Source`] runs these cases unchanged.
//!
//! The source under test must hold exactly the rows of [`ROWS`] (lookup key, then the fields
//! `n`, an integer, and `s`, text); [`csv_fixture`] and [`enrich_config`] build one from a file.

use serde_json::{json, Value};

use super::Source;
use crate::model::config::EnrichConfig;

/// The rows every source under test holds: key, `n`, `s`.
pub const ROWS: &[(&str, i64, &str)] = &[("a", 1, "x"), ("b", 2, "y"), ("key with space", 3, "z, quoted")];

fn expected(key: &str) -> Option<Vec<Value>> {
    ROWS.iter().find(|(k, _, _)| *k == key).map(|(_, n, s)| vec![json!(n), json!(s)])
}

/// [`ROWS`] as a CSV file with the header `k,n,s`, in an order unlike the keys'.
pub fn csv_fixture() -> String {
    let mut text = String::from("k,n,s\n");
    for (k, n, s) in ROWS.iter().rev() {
        text += &format!("{k},{n},\"{s}\"\n");
    }
    text
}

/// An `[enrich]` over `source` looking up `k`, adding `n` (typed as an integer) and `s`.
pub fn enrich_config(source: &str, memory_limit: u64) -> EnrichConfig {
    let toml = format!(
        "source = {source:?}\nkey = \"k\"\nfields = [\"n\", \"s\"]\nmemory_limit = {memory_limit}\n\
         columns = [{{ name = \"n\", type = \"integer\" }}]\n"
    );
    match toml::from_str(&toml) {
        Ok(c) => c,
        Err(e) => panic!("the fixture's enrich config does not parse: {e}"),
    }
}

/// Every case, in turn.
pub fn run_all(source: &dyn Source) {
    every_row_is_found_with_its_values_in_order(source);
    a_missing_key_is_none_not_an_error(source);
    prefetched_keys_give_the_same_answers(source);
    readers_at_once_agree(source);
}

/// `get` of each key returns its row.
pub fn every_row_is_found_with_its_values_in_order(source: &dyn Source) {
    let mut r = source.reader().expect("reader");
    for (k, _, _) in ROWS {
        let got = r.get(k).expect("get").map(|v| v.into_owned());
        assert_eq!(got, expected(k), "row of {k:?}");
    }
    // Asking again gives the same answer.
    assert_eq!(r.get("a").expect("get").map(|v| v.into_owned()), expected("a"));
}

/// A key that is not in the reference is `None`, and the reader goes on working.
pub fn a_missing_key_is_none_not_an_error(source: &dyn Source) {
    let mut r = source.reader().expect("reader");
    assert_eq!(r.get("no such key").expect("get"), None);
    assert_eq!(r.get("").expect("get"), None);
    assert_eq!(r.get("b").expect("get").map(|v| v.into_owned()), expected("b"));
}

/// After `prefetch` or `ahead`, found and missing keys alike get the answers `get` alone gives.
pub fn prefetched_keys_give_the_same_answers(source: &dyn Source) {
    let mut r = source.reader().expect("reader");
    let keys: Vec<String> = ["b", "missing", "a", "b"].iter().map(|k| k.to_string()).collect();
    r.prefetch(keys.clone()).expect("prefetch");
    for k in &keys {
        assert_eq!(r.get(k).expect("get").map(|v| v.into_owned()), expected(k), "prefetched {k:?}");
    }
    r.prefetch(Vec::new()).expect("an empty prefetch is fine");
    // `ahead` is a hint only: keys announced (some missing, some repeated, some never asked
    // for) change no answer.
    r.ahead(&["a", "missing", "key with space", "a", "never asked"]);
    for k in ["a", "missing", "key with space", "b"] {
        assert_eq!(r.get(k).expect("get").map(|v| v.into_owned()), expected(k), "announced {k:?}");
    }
    r.ahead(&[]);
}

/// Several readers in use at once each see every row.
pub fn readers_at_once_agree(source: &dyn Source) {
    let mut readers: Vec<_> = (0..3).map(|_| source.reader().expect("reader")).collect();
    for (k, _, _) in ROWS.iter().rev() {
        for r in readers.iter_mut() {
            assert_eq!(r.get(k).expect("get").map(|v| v.into_owned()), expected(k));
        }
    }
}
