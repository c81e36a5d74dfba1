//! `cargo xtask examples`: the public items of the published crates ([`CRATES`]) whose
//! documentation has no example (no code block in the doc comment right above them), counted from
//! the sources. `cargo xtask ci` fails when there is any, so that every public item comes with
//! an example.
//!
//! An item is a line that starts `pub fn`, `pub struct`, `pub enum`, `pub trait`, `pub type`,
//! `pub const`, `pub static` or `pub mod` (after `const`, `unsafe` and `extern "C"`), at any
//! indentation, so that methods count; `pub(crate)` items do not. Nor do items outside the docs:
//! those marked `#[doc(hidden)]`, and every item of a module so marked, written inline or in
//! files of its own.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{root, CRATES};

pub(crate) fn run_task() -> Result<(), String> {
    let mut total = 0;
    for krate in CRATES {
        let mut files = Vec::new();
        walk(&root().join("crates").join(krate).join("src"), &mut files)?;
        let hidden = hidden_paths(&files);
        let mut missing = Vec::new();
        let mut items = 0;
        for (path, source) in &files {
            if hidden.iter().any(|hidden| path.starts_with(hidden)) {
                continue;
            }
            for (line, item) in items_without_example(source, &mut items) {
                missing.push(format!("{}:{line} {item}", path.display()));
            }
        }
        println!("{krate}: {} of {items} public items have no example", missing.len());
        for item in &missing {
            println!("    {item}");
        }
        total += missing.len();
    }
    if total > 0 {
        return Err(format!(
            "{total} public items have no example: give each an `# Examples` section"
        ));
    }
    Ok(())
}

/// Adds the path and text of every `.rs` file under `dir` to `files`, in path order.
fn walk(dir: &Path, files: &mut Vec<(PathBuf, String)>) -> Result<(), String> {
    let entries =
        fs::read_dir(dir).map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|entry| entry.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, files)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let source = fs::read_to_string(&path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            files.push((path, source));
        }
    }
    Ok(())
}

/// The public items of `source` whose doc comment has no code block, with their line numbers;
/// counts every public item in `items`. Items hidden from the docs are left out of both.
fn items_without_example(source: &str, items: &mut usize) -> Vec<(usize, String)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut missing = Vec::new();
    // The line that closes the hidden module being passed over, if any: rustfmt puts a module's
    // closing brace alone on a line, at the indentation of the module's first line.
    let mut hidden_until = None;
    for (index, line) in lines.iter().enumerate() {
        if let Some(end) = &hidden_until {
            if line == end {
                hidden_until = None;
            }
            continue;
        }
        let Some(item) = public_item(line) else { continue };
        if is_hidden(&lines[..index]) {
            if item.starts_with("mod ") && line.trim_end().ends_with('{') {
                let indent = &line[..line.len() - line.trim_start().len()];
                hidden_until = Some(format!("{indent}}}"));
            }
            continue;
        }
        *items += 1;
        let has_example = doc_and_attributes(&lines[..index])
            .any(|line| line.starts_with("///") && line.contains("```"));
        if !has_example {
            missing.push((index + 1, item));
        }
    }
    missing
}

/// The files of the modules declared `#[doc(hidden)]` in `files`, whose items are hidden too: for
/// `mod name;` in `lib.rs`, `main.rs` or `mod.rs`, its folder's `name.rs` and `name/`; in any
/// other `file.rs`, `file/name.rs` and `file/name/`.
fn hidden_paths(files: &[(PathBuf, String)]) -> Vec<PathBuf> {
    let mut hidden = Vec::new();
    for (path, source) in files {
        let folder = path.parent().unwrap_or(Path::new(""));
        let folder = match path.file_stem().and_then(|stem| stem.to_str()) {
            Some("lib" | "main" | "mod") | None => folder.to_path_buf(),
            Some(stem) => folder.join(stem),
        };
        let lines: Vec<&str> = source.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let Some(name) = public_item(line) else { continue };
            let Some(name) = name.strip_prefix("mod ") else { continue };
            if line.trim_end().ends_with(';') && is_hidden(&lines[..index]) {
                hidden.push(folder.join(format!("{name}.rs")));
                hidden.push(folder.join(name));
            }
        }
    }
    hidden
}

/// Whether the item on the line after `above` is marked `#[doc(hidden)]`.
fn is_hidden(above: &[&str]) -> bool {
    doc_and_attributes(above).any(|line| line == "#[doc(hidden)]")
}

/// The lines right above an item, nearest first, trimmed: its doc comment, its attributes and
/// plain comments among them.
fn doc_and_attributes<'a>(above: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
    above
        .iter()
        .rev()
        .map(|line| line.trim_start())
        .take_while(|line| line.starts_with("//") || line.starts_with("#["))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_hidden_from_the_docs_are_not_counted() {
        let source = r#"
/// Shown, with an example.
///
/// ```
/// assert!(true);
/// ```
pub fn shown() {}

/// Shown, without one.
#[must_use]
pub fn bare() -> u8 { 0 }

/// Hidden.
#[doc(hidden)]
pub fn hidden() {}

/// Hidden, and so is all it holds.
#[doc(hidden)]
pub mod plumbing {
    pub fn inner() {}

    pub mod nested {
        pub fn deeper() {}
    }
}

impl Type {
    #[doc(hidden)]
    pub fn hidden_method() {}

    pub fn method() {}
}
"#;
        let mut items = 0;
        let missing = items_without_example(source, &mut items);
        let names: Vec<&str> = missing.iter().map(|(_, item)| item.as_str()).collect();
        assert_eq!(names, ["fn bare", "fn method"]);
        assert_eq!(items, 3);
        assert_eq!(missing[0].0, 11);
    }

    #[test]
    fn the_files_of_hidden_modules_are_hidden() {
        let file = |path: &str, source: &str| (PathBuf::from(path), source.to_owned());
        let files = [
            file("src/lib.rs", "#[cfg(x)]\n#[doc(hidden)]\npub mod model;\npub mod shown;\n"),
            file("src/arena.rs", "#[doc(hidden)]\npub mod inner;\n"),
            file(
                "src/tx/mod.rs",
                "#[doc(hidden)]\npub mod inline {\n}\n#[doc(hidden)]\npub mod log;\n",
            ),
        ];
        let hidden = hidden_paths(&files);
        let expected = [
            "src/model.rs",
            "src/model",
            "src/arena/inner.rs",
            "src/arena/inner",
            "src/tx/log.rs",
            "src/tx/log",
        ];
        assert_eq!(hidden, expected.map(PathBuf::from));
        assert!(hidden.iter().any(|path| Path::new("src/model/sub.rs").starts_with(path)));
        assert!(!hidden.iter().any(|path| Path::new("src/shown.rs").starts_with(path)));
    }
}
