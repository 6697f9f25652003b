//! The layers ARCHITECTURE.md draws are the crate's folders, and no module uses one above its
//! own: the diagram is checked against `src/`, and every `crate::` path against the diagram.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers, bottom first, as the diagram in ARCHITECTURE.md lists them (top first).
fn layers() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text.find("<!-- layers -->").expect("ARCHITECTURE.md marks its layer diagram with <!-- layers -->");
    let block = &text[start..];
    let body = &block[block.find("```text\n").expect("the diagram is a text block") + 8..];
    let body = &body[..body.find("```").unwrap()];
    let mut layers: Vec<String> = body
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.ends_with('/') || w.ends_with(".rs"))
        .map(|w| w.trim_end_matches('/').trim_end_matches(".rs").to_string())
        .collect();
    layers.reverse();
    layers
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layer a file is in: its first folder under `src/`, or its own name at the top.
fn layer_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn the_diagram_names_every_folder_of_src_and_no_module_uses_a_layer_above_its_own() {
    let layers = layers();
    let src = root().join("src");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().trim_end_matches(".rs").to_string())
        .filter(|n| n != "lib" && n != "bin")
        .collect();
    let drawn: BTreeSet<String> = layers.iter().cloned().collect();
    assert_eq!(drawn, on_disk, "ARCHITECTURE.md's layers against the entries of src/");
    let rank = |l: &str| layers.iter().position(|x| x == l).unwrap();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let path = regex_lite_crate_path();
    let mut upward = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(src.join("bin")) && !f.ends_with("lib.rs")) {
        let own = layer_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("").to_string() + "\n").collect();
        for used in path(&code) {
            if drawn.contains(&used) && rank(&used) > rank(&own) {
                upward.push(format!("{}: {own} uses {used}", file.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(upward.is_empty(), "uses of a layer above the user's own:\n{}", upward.join("\n"));
}

/// The first name after each `crate::` in code, and the first name of each item of a
/// `use crate::{…}` group (over lines too).
fn regex_lite_crate_path() -> impl Fn(&str) -> Vec<String> {
    |code: &str| {
        let mut found = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + 7..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split(';').next().unwrap_or("");
                // Items at the group's top level: a nested group's items are not.
                let mut depth = 0;
                let top: String = group
                    .chars()
                    .map(|c| {
                        depth += i32::from(c == '{') - i32::from(c == '}');
                        if depth > 0 || c == '{' || c == '}' {
                            ' '
                        } else {
                            c
                        }
                    })
                    .collect();
                for item in top.split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    found.push(name);
                }
            } else {
                found.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        found
    }
}

#[test]
fn the_path_reader_finds_plain_and_grouped_uses_and_skips_other_crates() {
    let path = regex_lite_crate_path();
    assert_eq!(path("use crate::model::config::JobConfig;"), ["model"]);
    assert_eq!(path("use crate::{batch::job, engine::Engine, Error};"), ["batch", "engine", "Error"]);
    assert_eq!(path("let x = mycrate::batch::y;"), Vec::<String>::new());
    let grouped = "use crate::{\n    backends::{backends::bucket, backends::sink::Sink},\n    model::config,\n};";
    assert_eq!(path(grouped), ["backends", "model", ""]);
}
