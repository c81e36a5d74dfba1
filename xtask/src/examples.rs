//! `cargo xtask examples`: the public items of the published crates ([`CRATES`]) whose
//! documentation has no example (no code block in the doc comment right above them), counted from
//! the sources. `cargo xtask ci` fails when the count grows past [`AT_MOST`], so that every new
//! public item comes with an example; lower the bound as examples are written.
//!
//! An item is a line that starts `pub fn`, `pub struct`, `pub enum`, `pub trait`, `pub type`,
//! `pub const`, `pub static` or `pub mod` (after `const`, `unsafe` and `extern "C"`), at any
//! indentation, so that methods count; `pub(crate)` items do not.

use std::fs;
use std::path::Path;

use crate::{root, CRATES};

/// The most public items without an example the sources may have.
const AT_MOST: usize = 100;

pub(crate) fn run_task() -> Result<(), String> {
    let mut total = 0;
    for krate in CRATES {
        let mut missing = Vec::new();
        let mut items = 0;
        walk(&root().join("crates").join(krate).join("src"), &mut |path, source| {
            for (line, item) in items_without_example(source, &mut items) {
                missing.push(format!("{}:{line} {item}", path.display()));
            }
        })?;
        println!("{krate}: {} of {items} public items have no example", missing.len());
        for item in &missing {
            println!("    {item}");
        }
        total += missing.len();
    }
    if total > AT_MOST {
        return Err(format!(
            "{total} public items have no example, more than the {AT_MOST} allowed: give the new \
             ones an `# Examples` section"
        ));
    }
    if total < AT_MOST {
        println!("{total} public items without an example: `AT_MOST` in xtask/src/examples.rs can come down to it");
    }
    Ok(())
}

/// Calls `each` with the path and text of every `.rs` file under `dir`.
fn walk(dir: &Path, each: &mut dyn FnMut(&Path, &str)) -> Result<(), String> {
    let entries =
        fs::read_dir(dir).map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|entry| entry.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, each)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let source = fs::read_to_string(&path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            each(&path, &source);
        }
    }
    Ok(())
}

/// The public items of `source` whose doc comment has no code block, with their line numbers;
/// counts every public item in `items`.
fn items_without_example(source: &str, items: &mut usize) -> Vec<(usize, String)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut missing = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(item) = public_item(line) else { continue };
        *items += 1;
        // The doc comment is the run of `///` lines above the item, through its attributes and
        // plain comments.
        let has_example = lines[..index]
            .iter()
            .rev()
            .map(|line| line.trim_start())
            .take_while(|line| line.starts_with("//") || line.starts_with("#["))
            .any(|line| line.starts_with("///") && line.contains("```"));
        if !has_example {
            missing.push((index + 1, item));
        }
    }
    missing
}

/// The kind and name of the public item `line` starts, if it starts one.
fn public_item(line: &str) -> Option<String> {
    let mut rest = line.trim_start().strip_prefix("pub ")?;
    for qualifier in ["const ", "unsafe ", "extern \"C\" "] {
        if let Some(after) = rest.strip_prefix(qualifier) {
            rest = after;
        }
    }
    let (kind, after) = rest.split_once(' ')?;
    let kinds = ["fn", "struct", "enum", "trait", "type", "const", "static", "mod"];
    if !kinds.contains(&kind) {
        return None;
    }
    let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    Some(format!("{kind} {name}"))
}
