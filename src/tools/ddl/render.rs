//! The SQL text of a decided [`Table`]: its notes as comments, then the statement.

use super::{Column, Table};

/// A string literal in Hive DDL (backslash escapes).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub(super) fn property_lines(props: &[(String, String)]) -> String {
    props.iter().map(|(k, v)| format!("  {} = {}", quote(k), quote(v))).collect::<Vec<_>>().join(",\n")
}

fn column_lines(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| match &c.comment {
            Some(note) => format!("  `{}` {} COMMENT {}", c.name, c.kind, quote(note)),
            None => format!("  `{}` {}", c.name, c.kind),
        })
        .collect::<Vec<_>>()
        .join(",\n")
}

/// The SQL of `t`: its notes as `--` comments, then the statement.
pub fn render(t: &Table) -> String {
    let mut out = String::new();
    for note in &t.notes {
        out.push_str(&format!("-- {note}\n"));
    }
    out.push_str(&format!("CREATE EXTERNAL TABLE IF NOT EXISTS {} (\n{}\n)\n", t.name, column_lines(&t.columns)));
    if !t.partitions.is_empty() {
        out.push_str(&format!("PARTITIONED BY (\n{}\n)\n", column_lines(&t.partitions)));
    }
    out.push_str(&t.storage);
    out.push('\n');
    out.push_str(&format!("LOCATION {}", quote(&t.location)));
    if !t.properties.is_empty() {
        out.push_str(&format!("\nTBLPROPERTIES (\n{}\n)", property_lines(&t.properties)));
    }
    out.push_str(";\n");
    out
}
