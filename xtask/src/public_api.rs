//! `cargo xtask public-api [--bless]`: the public API of each published crate ([`CRATES`]) as a
//! sorted text listing, one line per item, checked against `docs/public-api/CRATE.txt`, so that
//! any change to the API is a change to those files, seen in review. The task fails with a diff
//! when a listing and its file differ; `--bless` writes the files instead.
//!
//! Each listing is read from rustdoc's JSON output (`cargo +nightly rustdoc -p CRATE --lib -- -Z
//! unstable-options --output-format json`), for Linux and the crate's default features:
//! - every item reachable from the crate's root through public paths, under the shortest of them
//!   (each other path that re-exports it is a `pub use` line), with its signature: generics and
//!   where clauses, the argument types (not their names, which are no part of the API), the
//!   return type, `const`, `async`, `unsafe`, `extern "C"`, `#[non_exhaustive]`, `#[repr(..)]`
//!   and `#[deprecated]`;
//! - the public fields of structs and unions, the variants of enums, the items of traits (a
//!   provided method ends in `{ ... }`) and the public items of inherent impls, where clauses of
//!   the impl included;
//! - the trait impls of the crate's types and of its traits, each on one line with its associated
//!   types and constants, and the impls of the stable auto traits (`Send`, `Sync`, `Unpin`,
//!   `UnwindSafe`, `RefUnwindSafe`) that the compiler derives. Blanket impls (`impl<T> From<T> for
//!   T` and the like) follow from the rest and are left out, and so are the unstable auto traits,
//!   whose impls change with the nightly toolchain rather than with the code;
//! - items marked `#[doc(hidden)]` are no part of the API: rustdoc leaves them out, and so does
//!   the walk.
//!
//! Items of other crates are named by their definition path (`core::ptr::non_null::NonNull`),
//! except the items of the crates listed before, named by their public path: [`CRATES`] is in
//! dependency order, so `melon_alloc_core::FreeError` rather than the path of the private module
//! that defines it. An item one of them re-exports from another is a `pub use` line, listed in
//! full in the file of the crate that defines it.
//!
//! The walk is written here over `serde_json::Value` rather than taken from the `public-api`
//! crate. That crate parses one format version of the JSON through `rustdoc-types` (its release
//! 0.52 reads format 59, while the nightly of May 2026 writes format 57) and does not check the
//! version it is given, so a nightly that is ahead of it or behind it can be misread without a
//! word; and it would bring some twenty crates into the xtask. The walk here reads only the fields
//! it needs and stops with an error on any item or type kind it does not know, so a new format
//! either leaves it working or makes it fail, never quietly wrong. A new nightly can still render
//! a signature differently; then the listings are blessed again on purpose.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::ErrorKind;

use serde_json::{Map, Value};

use crate::{root, run, target_dir, CRATES};

/// Where the listings are kept, from the workspace root.
const DIR: &str = "docs/public-api";

/// The auto traits whose derived impls are listed: the stable ones.
const AUTO_TRAITS: [&str; 5] = ["Send", "Sync", "Unpin", "UnwindSafe", "RefUnwindSafe"];

/// How many unchanged lines a diff shows around each change.
const CONTEXT: usize = 3;

pub(crate) fn run_task(args: &[String]) -> Result<(), String> {
    let bless = match args {
        [] => false,
        [flag] if flag == "--bless" => true,
        _ => {
            return Err(format!("unknown arguments {args:?}; try `cargo xtask public-api --bless`"))
        }
    };
    crate::install_nightly()?;
    let doc = target_dir()?.join("doc");
    // The public paths of the items of the crates listed so far, by definition path.
    let mut known = HashMap::new();
    let mut differ = Vec::new();
    for krate in CRATES {
        let mut rustdoc = crate::toolchain_cargo("nightly");
        rustdoc.args(["rustdoc", "-p", krate, "--lib", "--", "-Z", "unstable-options"]);
        rustdoc.args(["--output-format", "json"]);
        run(rustdoc)?;
        let path = doc.join(format!("{}.json", krate.replace('-', "_")));
        let json = fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let json: Value = serde_json::from_str(&json)
            .map_err(|error| format!("{} is not JSON: {error}", path.display()))?;
        let listing = listing(krate, &json, &mut known)?;

        let file = root().join(DIR).join(format!("{krate}.txt"));
        let committed = match fs::read_to_string(&file) {
            Ok(committed) => committed,
            Err(error) if error.kind() == ErrorKind::NotFound => String::new(),
            Err(error) => return Err(format!("cannot read {}: {error}", file.display())),
        };
        if committed == listing {
            println!("{krate}: the public API is as in {DIR}/{krate}.txt");
        } else if bless {
            fs::create_dir_all(root().join(DIR))
                .map_err(|error| format!("cannot create {DIR}: {error}"))?;
            fs::write(&file, &listing)
                .map_err(|error| format!("cannot write {}: {error}", file.display()))?;
            println!("{krate}: wrote {DIR}/{krate}.txt");
        } else {
            println!("--- {DIR}/{krate}.txt\n+++ the public API of {krate} now");
            print!("{}", diff(&committed, &listing));
            differ.push(krate);
        }
    }
    if differ.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the public API of {} is not what {DIR}/ says (the diff is above): if the change is \
         intended, run `cargo xtask public-api --bless` and commit the files",
        differ.join(", ")
    ))
}

/// The listing of the crate `krate` from its rustdoc JSON: a header line, then one line per
/// item, sorted. Adds the public paths of the crate's items to `known`, for the crates after it.
fn listing(
    krate: &str,
    json: &Value,
    known: &mut HashMap<String, String>,
) -> Result<String, String> {
    let api = Api::new(json, known)?;
    let mut lines = api.lines()?;
    let definitions = api.definition_paths();
    known.extend(definitions);
    lines.sort();
    lines.dedup();
    let mut text = format!(
        "// The public API of {krate} on Linux (default features), from nightly rustdoc's JSON: \
         written by `cargo xtask public-api --bless`.\n"
    );
    for line in lines {
        text.push_str(&line.text);
        text.push('\n');
    }
    Ok(text)
}

/// A line of a listing, in the order of the listing: by the path of the item it belongs to; an
/// item's own line first, then its fields, variants and members by name, its trait impls, and
/// last the impls of auto traits that the compiler derives.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Line {
    path: String,
    group: u8,
    member: String,
    text: String,
}

impl Line {
    fn item(path: &str, text: String) -> Self {
        Line { path: path.to_string(), group: 0, member: String::new(), text }
    }

    fn member(owner: &str, name: &str, text: String) -> Self {
        Line { path: owner.to_string(), group: 1, member: name.to_string(), text }
    }

    fn implementation(owner: &str, derived: bool, text: String) -> Self {
        Line { path: owner.to_string(), group: 2 + u8::from(derived), member: String::new(), text }
    }
}

/// A crate's rustdoc JSON, and the paths at which its items are public.
struct Api<'a> {
    /// The crate's items, by id.
    index: &'a Map<String, Value>,
    /// The definition path of every item the crate names, its own and others', by id.
    paths: &'a Map<String, Value>,
    /// The public paths of the items of crates listed before, by definition path.
    known: &'a HashMap<String, String>,
    /// The shortest public path of each of the crate's items that has one, by id.
    public: HashMap<String, String>,
    /// The `pub use` lines.
    uses: Vec<Line>,
}

/// What an item with nothing inside holds, as [`variant`] gives it.
static NULL: Value = Value::Null;

impl<'a> Api<'a> {
    fn new(json: &'a Value, known: &'a HashMap<String, String>) -> Result<Self, String> {
        let index = field(json, "index")?.as_object().ok_or("the `index` is not an object")?;
        let paths = field(json, "paths")?.as_object().ok_or("the `paths` are not an object")?;
        let mut api = Api { index, paths, known, public: HashMap::new(), uses: Vec::new() };
        api.reach(&key(field(json, "root")?)?)?;
        Ok(api)
    }

    /// Walks the modules from the root, breadth first, to find the public paths of the items:
    /// each is listed under the shortest, and each other one is a `pub use` line, as is every
    /// re-export of an item of another crate. A module is walked once, under the first path
    /// that reaches it, so that modules that re-export each other end.
    fn reach(&mut self, root: &str) -> Result<(), String> {
        let name = text(self.item(root)?, "name")?.to_string();
        let mut reached = vec![(name.clone(), root.to_string())];
        let mut queue = VecDeque::from([(root.to_string(), name)]);
        let mut walked = HashSet::from([root.to_string()]);
        while let Some((module, path)) = queue.pop_front() {
            let (_, inner) = variant(field(self.item(&module)?, "inner")?)?;
            for id in list(inner, "items")? {
                let id = key(id)?;
                let Some(item) = self.index.get(&id) else { continue };
                if !is_public(item) || is_hidden(item) {
                    continue;
                }
                let (kind, inner) = variant(field(item, "inner")?)?;
                let (target, item_path) = if kind == "use" {
                    let name = text(inner, "name")?;
                    let target = inner.get("id").filter(|id| !id.is_null());
                    let local = match target {
                        Some(target) => Some(key(target)?).filter(|t| self.index.contains_key(t)),
                        None => None,
                    };
                    let glob = inner.get("is_glob").and_then(Value::as_bool) == Some(true);
                    match local {
                        Some(local) if glob && self.kind(&local)? == "module" => {
                            // The module's items are this module's too.
                            queue.push_back((local, path.clone()));
                            continue;
                        }
                        Some(local) if !glob => (local, format!("{path}::{name}")),
                        _ => {
                            let to = self.name_of(target, text(inner, "source")?);
                            self.uses.push(if glob {
                                Line::item(&path, format!("pub use {path}::* = {to}::*"))
                            } else {
                                let alias = format!("{path}::{name}");
                                Line::item(&alias, format!("pub use {alias} = {to}"))
                            });
                            continue;
                        }
                    }
                } else {
                    (id, format!("{path}::{}", text(item, "name")?))
                };
                if self.kind(&target)? == "module" && walked.insert(target.clone()) {
                    queue.push_back((target.clone(), item_path.clone()));
                }
                reached.push((item_path, target));
            }
        }
        // The shortest path first, and the first in sort order among paths as short.
        reached.sort_by_key(|(path, _)| (path.matches("::").count(), path.clone()));
        for (path, id) in reached {
            match self.public.get(&id) {
                Some(public) => {
                    let line = format!("pub use {path} = {public}");
                    self.uses.push(Line::item(&path, line));
                }
                None => {
                    self.public.insert(id, path);
                }
            }
        }
        Ok(())
    }

    /// The definition paths of the crate's public items, with their public paths.
    fn definition_paths(&self) -> Vec<(String, String)> {
        let mut definitions = Vec::new();
        for (id, public) in &self.public {
            if let Some(definition) = self.paths.get(id).and_then(definition_path) {
                definitions.push((definition, public.clone()));
            }
        }
        definitions
    }

    /// The listing's lines, unsorted.
    fn lines(&self) -> Result<Vec<Line>, String> {
        let mut out = self.uses.clone();
        for (id, path) in &self.public {
            self.item_lines(self.item(id)?, path, &mut out)
                .map_err(|error| format!("{path}: {error}"))?;
        }
        Ok(out)
    }

    /// The lines of the item at `path`, and of its fields, variants, members and impls.
    fn item_lines(&self, item: &'a Value, path: &str, out: &mut Vec<Line>) -> Result<(), String> {
        let prefix = format!("{}pub ", attributes(item));
        let (kind, inner) = variant(field(item, "inner")?)?;
        let line = match kind {
            "module" => format!("{prefix}mod {path}"),
            "struct" | "union" => {
                let generics = field(inner, "generics")?;
                let (fields, shape) = if kind == "union" {
                    (list(inner, "fields")?.iter().collect(), String::new())
                } else {
                    self.struct_fields(field(inner, "kind")?)?
                };
                for id in fields {
                    let field_item = self.item(&key(id)?)?;
                    if is_public(field_item) && !is_hidden(field_item) {
                        let name = text(field_item, "name")?;
                        let ty = self.field_type(id)?;
                        let line = format!("{}pub {path}::{name}: {ty}", attributes(field_item));
                        out.push(Line::member(path, name, line));
                    }
                }
                self.impls(list(inner, "impls")?, out)?;
                let (params, predicates) = self.declaration(generics)?;
                format!("{prefix}{kind} {path}{params}{shape}{predicates}")
            }
            "enum" => {
                for id in list(inner, "variants")? {
                    let variant_item = self.item(&key(id)?)?;
                    let name = text(variant_item, "name")?;
                    let line = format!(
                        "{}pub {path}::{name}{}",
                        attributes(variant_item),
                        self.variant(variant_item)?
                    );
                    out.push(Line::member(path, name, line));
                }
                self.impls(list(inner, "impls")?, out)?;
                let (params, predicates) = self.declaration(field(inner, "generics")?)?;
                format!("{prefix}enum {path}{params}{predicates}")
            }
            "trait" => {
                for id in list(inner, "items")? {
                    let member = self.item(&key(id)?)?;
                    if !is_hidden(member) {
                        out.push(self.member(member, path, path, &[], true)?);
                    }
                }
                self.impls(list(inner, "implementations")?, out)?;
                let (params, predicates) = self.declaration(field(inner, "generics")?)?;
                format!(
                    "{prefix}{}{}trait {path}{params}{}{predicates}",
                    if flag(inner, "is_unsafe")? { "unsafe " } else { "" },
                    if flag(inner, "is_auto")? { "auto " } else { "" },
                    self.supertraits(list(inner, "bounds")?)?,
                )
            }
            "trait_alias" => {
                let (params, predicates) = self.declaration(field(inner, "generics")?)?;
                let bounds = self.bounds(list(inner, "params")?)?;
                format!("{prefix}trait {path}{params} = {bounds}{predicates}")
            }
            "function" => self.function(&prefix, path, inner, &[])?,
            "type_alias" => {
                let (params, predicates) = self.declaration(field(inner, "generics")?)?;
                let ty = self.ty(field(inner, "type")?)?;
                format!("{prefix}type {path}{params} = {ty}{predicates}")
            }
            "constant" => {
                let value = constant_value(field(inner, "const")?);
                format!("{prefix}const {path}: {}{value}", self.ty(field(inner, "type")?)?)
            }
            "static" => format!(
                "{prefix}{}static {}{path}: {}",
                if inner.get("is_unsafe").and_then(Value::as_bool) == Some(true) {
                    "unsafe "
                } else {
                    ""
                },
                if flag(inner, "is_mutable")? { "mut " } else { "" },
                self.ty(field(inner, "type")?)?
            ),
            "macro" => format!("{prefix}macro {path}!"),
            "proc_macro" => match text(inner, "kind")? {
                "attr" => format!("{prefix}macro #[{path}]"),
                "derive" => format!("{prefix}macro derive({path})"),
                _ => format!("{prefix}macro {path}!"),
            },
            "extern_type" => format!("{prefix}extern type {path}"),
            "extern_crate" => format!("{prefix}extern crate {path} = {}", text(inner, "name")?),
            // Only the standard library defines primitives.
            "primitive" => return Ok(()),
            _ => return Err(format!("unknown item kind `{kind}` in rustdoc's JSON")),
        };
        out.push(Line::item(path, line));
        Ok(())
    }

    /// The ids of a struct's fields (`null` for one that is not public) and how the struct line
    /// ends: `;` for a unit struct, the field types for a tuple struct.
    fn struct_fields(&self, kind: &'a Value) -> Result<(Vec<&'a Value>, String), String> {
        match variant(kind)? {
            ("unit", _) => Ok((Vec::new(), ";".to_string())),
            ("tuple", fields) => Ok((Vec::new(), self.tuple(fields, "pub ")?)),
            ("plain", plain) => Ok((list(plain, "fields")?.iter().collect(), String::new())),
            (other, _) => Err(format!("unknown struct kind `{other}` in rustdoc's JSON")),
        }
    }

    /// How an enum variant's line ends: its fields and discriminant.
    fn variant(&self, item: &Value) -> Result<String, String> {
        let inner = field(field(item, "inner")?, "variant")?;
        let mut end = match variant(field(inner, "kind")?)? {
            ("plain", _) => String::new(),
            ("tuple", fields) => self.tuple(fields, "")?,
            ("struct", fields) => {
                let mut named = Vec::new();
                for id in list(fields, "fields")? {
                    let name = text(self.item(&key(id)?)?, "name")?;
                    named.push(format!("{name}: {}", self.field_type(id)?));
                }
                if flag(fields, "has_stripped_fields")? {
                    named.push("..".to_string());
                }
                format!(" {{ {} }}", named.join(", "))
            }
            (other, _) => return Err(format!("unknown variant kind `{other}` in rustdoc's JSON")),
        };
        if let Some(discriminant) = inner.get("discriminant").filter(|d| !d.is_null()) {
            end.push_str(&format!(" = {}", text(discriminant, "value")?));
        }
        Ok(end)
    }

    /// The fields of a tuple struct or variant, `(pub T, _)`: `_` for one that is not public,
    /// whose id is `null`.
    fn tuple(&self, ids: &Value, visibility: &str) -> Result<String, String> {
        let mut types = Vec::new();
        for id in ids.as_array().ok_or("a tuple without fields")? {
            types.push(match id {
                Value::Null => "_".to_string(),
                id => format!("{visibility}{}", self.field_type(id)?),
            });
        }
        Ok(format!("({})", types.join(", ")))
    }

    /// The type of the field `id`.
    fn field_type(&self, id: &Value) -> Result<String, String> {
        self.ty(field(field(self.item(&key(id)?)?, "inner")?, "struct_field")?)
    }

    /// The lines of the impls `ids`: a line per trait impl, a line per public member of an
    /// inherent impl. Blanket impls, and derived impls of the unstable auto traits, are left
    /// out.
    fn impls(&self, ids: &[Value], out: &mut Vec<Line>) -> Result<(), String> {
        for id in ids {
            // An impl rustdoc strips is named but not in the index.
            let Some(item) = self.index.get(&key(id)?) else { continue };
            let inner = field(field(item, "inner")?, "impl")?;
            if !field(inner, "blanket_impl")?.is_null() || is_hidden(item) {
                continue;
            }
            let generics = field(inner, "generics")?;
            let for_type = field(inner, "for")?;
            let trait_path = inner.get("trait").filter(|t| !t.is_null());
            let type_key = self.type_key(for_type)?;

            let Some(trait_path) = trait_path else {
                // An inherent impl: its members, each under the type's path, with the impl's
                // bounds in their where clauses.
                let owner = self.ty(for_type)?;
                let sort_key = type_key.unwrap_or_else(|| owner.clone());
                let mut bounds = self.parameter_bounds(generics)?;
                bounds.extend(self.predicates(generics)?);
                for id in list(inner, "items")? {
                    let member = self.item(&key(id)?)?;
                    if is_public(member) && !is_hidden(member) {
                        out.push(self.member(member, &owner, &sort_key, &bounds, false)?);
                    }
                }
                continue;
            };
            let trait_name = self.name_of(trait_path.get("id"), text(trait_path, "path")?);
            let last = trait_name.rsplit("::").next().unwrap_or(&trait_name);
            let derived = flag(inner, "is_synthetic")?;
            if derived && !AUTO_TRAITS.contains(&last) {
                continue;
            }
            let mut associated = Vec::new();
            for id in list(inner, "items")? {
                let member = self.item(&key(id)?)?;
                let name = text(member, "name")?;
                match variant(field(member, "inner")?)? {
                    ("assoc_type", member) => associated.push(format!(
                        "type {name}{} = {}",
                        self.generics(field(member, "generics")?)?,
                        self.ty(field(member, "type")?)?
                    )),
                    ("assoc_const", member) => associated.push(format!(
                        "const {name}: {}{}",
                        self.ty(field(member, "type")?)?,
                        assigned(member.get("value").and_then(Value::as_str))
                    )),
                    _ => {}
                }
            }
            let line = format!(
                "{}impl{} {}{} for {}{}{}",
                if flag(inner, "is_unsafe")? { "unsafe " } else { "" },
                self.generics(generics)?,
                if flag(inner, "is_negative")? { "!" } else { "" },
                self.path(trait_path)?,
                self.ty(for_type)?,
                where_clause(self.predicates(generics)?),
                if associated.is_empty() {
                    String::new()
                } else {
                    format!(" {{ {} }}", associated.join("; "))
                }
            );
            out.push(Line::implementation(&type_key.unwrap_or(trait_name), derived, line));
        }
        Ok(())
    }

    /// The path an impl for `ty` sorts by, if `ty` is one of the crate's public types (through
    /// references, pointers, slices and arrays): that of the type. An impl of one of the crate's
    /// traits for another crate's type sorts with the trait.
    fn type_key(&self, ty: &Value) -> Result<Option<String>, String> {
        match variant(ty)? {
            ("resolved_path", path) => {
                let id = key(field(path, "id")?)?;
                Ok(self.public.get(&id).cloned())
            }
            ("borrowed_ref" | "raw_pointer" | "array", inner) => {
                self.type_key(field(inner, "type")?)
            }
            ("slice", inner) => self.type_key(inner),
            _ => Ok(None),
        }
    }

    /// The line of a trait's item or an inherent impl's, named `owner::name` and sorted under
    /// `key::name`; `bounds` are the impl's, added to a method's where clause.
    fn member(
        &self,
        item: &Value,
        owner: &str,
        key: &str,
        bounds: &[String],
        in_trait: bool,
    ) -> Result<Line, String> {
        let name = text(item, "name")?;
        let path = format!("{owner}::{name}");
        let prefix = format!("{}pub ", attributes(item));
        let line = match variant(field(item, "inner")?)? {
            ("function", function) => {
                let mut line = self.function(&prefix, &path, function, bounds)?;
                if in_trait && flag(function, "has_body")? {
                    line.push_str(" { ... }");
                }
                line
            }
            ("assoc_const", constant) => format!(
                "{prefix}const {path}: {}{}",
                self.ty(field(constant, "type")?)?,
                assigned(constant.get("value").and_then(Value::as_str))
            ),
            ("assoc_type", assoc) => {
                let (params, predicates) = self.declaration(field(assoc, "generics")?)?;
                let default = match assoc.get("type").filter(|ty| !ty.is_null()) {
                    Some(ty) => Some(self.ty(ty)?),
                    None => None,
                };
                format!(
                    "{prefix}type {path}{params}{}{}{predicates}",
                    self.supertraits(list(assoc, "bounds")?)?,
                    assigned(default.as_deref())
                )
            }
            (other, _) => return Err(format!("unknown member kind `{other}` in rustdoc's JSON")),
        };
        Ok(Line::member(key, name, line))
    }

    /// A function's line: `prefix`, then its qualifiers, `fn path`, generics, argument types,
    /// return type, and where clause with `bounds` first.
    fn function(
        &self,
        prefix: &str,
        path: &str,
        function: &Value,
        bounds: &[String],
    ) -> Result<String, String> {
        let signature = field(function, "sig")?;
        let generics = field(function, "generics")?;
        let mut arguments = Vec::new();
        for input in list(signature, "inputs")? {
            let [name, ty] = input.as_array().map(Vec::as_slice).unwrap_or_default() else {
                return Err(format!("an argument is not a name and a type: {}", shown(input)));
            };
            arguments.push(if name.as_str() == Some("self") {
                self.receiver(ty)?
            } else {
                self.ty(ty)?
            });
        }
        if flag(signature, "is_c_variadic")? {
            arguments.push("...".to_string());
        }
        let mut predicates = bounds.to_vec();
        predicates.extend(self.predicates(generics)?);
        Ok(format!(
            "{prefix}{}fn {path}{}({}){}{}",
            self.header(field(function, "header")?)?,
            self.generics(generics)?,
            arguments.join(", "),
            self.output(signature)?,
            where_clause(predicates)
        ))
    }

    /// A method's `self` argument as it is written: `self`, `&self`, `&'a mut self`, `self: T`.
    fn receiver(&self, ty: &Value) -> Result<String, String> {
        let is_self = |ty: &Value| ty.get("generic").and_then(Value::as_str) == Some("Self");
        if is_self(ty) {
            return Ok("self".to_string());
        }
        if let Some(reference) = ty.get("borrowed_ref") {
            if is_self(field(reference, "type")?) {
                return Ok(format!("{}self", self.reference(reference)?));
            }
        }
        Ok(format!("self: {}", self.ty(ty)?))
    }

    /// A function's qualifiers: `const`, `async`, `unsafe`, `extern "ABI"`.
    fn header(&self, header: &Value) -> Result<String, String> {
        let mut text = String::new();
        for (name, word) in
            [("is_const", "const "), ("is_async", "async "), ("is_unsafe", "unsafe ")]
        {
            if flag(header, name)? {
                text.push_str(word);
            }
        }
        let abi = match variant(field(header, "abi")?)? {
            ("Rust", _) => return Ok(text),
            ("Other", Value::String(name)) => name.clone(),
            (name, details) => {
                let unwind = details.get("unwind").and_then(Value::as_bool) == Some(true);
                format!("{}{}", name.to_lowercase(), if unwind { "-unwind" } else { "" })
            }
        };
        // Rust spells the C and system ABIs this way; the others are as rustdoc names them.
        let abi = match abi.as_str() {
            "c" => "C".to_string(),
            "c-unwind" => "C-unwind".to_string(),
            _ => abi,
        };
        text.push_str(&format!("extern \"{abi}\" "));
        Ok(text)
    }

    /// ` -> T` for a function that returns `T`, nothing for one that returns `()`.
    fn output(&self, signature: &Value) -> Result<String, String> {
        match signature.get("output").filter(|output| !output.is_null()) {
            Some(output) => Ok(format!(" -> {}", self.ty(output)?)),
            None => Ok(String::new()),
        }
    }

    /// A type, as Rust writes it.
    fn ty(&self, ty: &Value) -> Result<String, String> {
        let (kind, inner) = variant(ty)?;
        Ok(match kind {
            "resolved_path" => self.path(inner)?,
            "generic" | "primitive" => inner.as_str().ok_or("a type without a name")?.to_string(),
            "infer" => "_".to_string(),
            "tuple" => {
                let types = self.types(inner.as_array().ok_or("a tuple without types")?)?;
                match types.as_slice() {
                    [one] => format!("({one},)"),
                    types => format!("({})", types.join(", ")),
                }
            }
            "slice" => format!("[{}]", self.ty(inner)?),
            "array" => format!("[{}; {}]", self.ty(field(inner, "type")?)?, text(inner, "len")?),
            "pat" => self.ty(field(inner, "type")?)?,
            "raw_pointer" => format!(
                "*{} {}",
                if flag(inner, "is_mutable")? { "mut" } else { "const" },
                self.ty(field(inner, "type")?)?
            ),
            "borrowed_ref" => {
                format!("{}{}", self.reference(inner)?, self.ty(field(inner, "type")?)?)
            }
            "impl_trait" => {
                format!("impl {}", self.bounds(inner.as_array().ok_or("`impl` without bounds")?)?)
            }
            "dyn_trait" => {
                let mut parts = Vec::new();
                for bound in list(inner, "traits")? {
                    parts.push(format!(
                        "{}{}",
                        self.binder(list(bound, "generic_params")?)?,
                        self.path(field(bound, "trait")?)?
                    ));
                }
                if let Some(lifetime) = inner.get("lifetime").and_then(Value::as_str) {
                    parts.push(lifetime.to_string());
                }
                format!("dyn {}", parts.join(" + "))
            }
            "function_pointer" => {
                let signature = field(inner, "sig")?;
                let mut arguments = Vec::new();
                for input in list(signature, "inputs")? {
                    arguments.push(self.ty(input.get(1).ok_or("an argument without a type")?)?);
                }
                if flag(signature, "is_c_variadic")? {
                    arguments.push("...".to_string());
                }
                format!(
                    "{}{}fn({}){}",
                    self.binder(list(inner, "generic_params")?)?,
                    self.header(field(inner, "header")?)?,
                    arguments.join(", "),
                    self.output(signature)?
                )
            }
            "qualified_path" => {
                let name = text(inner, "name")?;
                let args = self.args(inner.get("args"))?;
                let self_type = self.ty(field(inner, "self_type")?)?;
                match inner.get("trait").filter(|t| !t.is_null()) {
                    Some(t) => format!("<{self_type} as {}>::{name}{args}", self.path(t)?),
                    None => format!("{self_type}::{name}{args}"),
                }
            }
            _ => return Err(format!("unknown type kind `{kind}` in rustdoc's JSON")),
        })
    }

    fn types(&self, types: &[Value]) -> Result<Vec<String>, String> {
        types.iter().map(|ty| self.ty(ty)).collect()
    }

    /// `&`, `&mut `, `&'a `, `&'a mut ` of a `borrowed_ref`.
    fn reference(&self, reference: &Value) -> Result<String, String> {
        let mut text = "&".to_string();
        if let Some(lifetime) = reference.get("lifetime").and_then(Value::as_str) {
            text.push_str(lifetime);
            text.push(' ');
        }
        if flag(reference, "is_mutable")? {
            text.push_str("mut ");
        }
        Ok(text)
    }

    /// A path to a type or trait with its generic arguments.
    fn path(&self, path: &Value) -> Result<String, String> {
        Ok(format!(
            "{}{}",
            self.name_of(path.get("id"), text(path, "path")?),
            self.args(path.get("args"))?
        ))
    }

    /// The name an item is listed by: its public path if it is this crate's, or a crate's
    /// listed before; else its definition path; else the path as the source wrote it.
    fn name_of(&self, id: Option<&Value>, written: &str) -> String {
        let Some(id) = id.and_then(|id| key(id).ok()) else { return written.to_string() };
        if let Some(public) = self.public.get(&id) {
            return public.clone();
        }
        match self.paths.get(&id).and_then(definition_path) {
            Some(definition) => self.known.get(&definition).cloned().unwrap_or(definition),
            None => written.to_string(),
        }
    }

    /// Generic arguments: `<'a, T, N, Item = T>`, `(A, B) -> C`, or nothing.
    fn args(&self, args: Option<&Value>) -> Result<String, String> {
        let Some(args) = args.filter(|args| !args.is_null()) else { return Ok(String::new()) };
        match variant(args)? {
            ("angle_bracketed", angle) => {
                let mut parts = Vec::new();
                for arg in list(angle, "args")? {
                    parts.push(match variant(arg)? {
                        ("lifetime", lifetime) => {
                            lifetime.as_str().ok_or("a lifetime without a name")?.to_string()
                        }
                        ("type", ty) => self.ty(ty)?,
                        ("const", constant) => text(constant, "expr")?.to_string(),
                        ("infer", _) => "_".to_string(),
                        (other, _) => {
                            return Err(format!(
                                "unknown generic argument `{other}` in rustdoc's JSON"
                            ))
                        }
                    });
                }
                for constraint in list(angle, "constraints")? {
                    let name = format!(
                        "{}{}",
                        text(constraint, "name")?,
                        self.args(constraint.get("args"))?
                    );
                    parts.push(match variant(field(constraint, "binding")?)? {
                        ("equality", term) => format!("{name} = {}", self.term(term)?),
                        ("constraint", bounds) => format!(
                            "{name}: {}",
                            self.bounds(bounds.as_array().ok_or("a constraint without bounds")?)?
                        ),
                        (other, _) => {
                            return Err(format!("unknown constraint `{other}` in rustdoc's JSON"))
                        }
                    });
                }
                Ok(if parts.is_empty() { String::new() } else { format!("<{}>", parts.join(", ")) })
            }
            ("parenthesized", parenthesized) => {
                let inputs = self.types(list(parenthesized, "inputs")?)?;
                Ok(format!("({}){}", inputs.join(", "), self.output(parenthesized)?))
            }
            ("return_type_notation", _) => Ok("(..)".to_string()),
            (other, _) => Err(format!("unknown generic arguments `{other}` in rustdoc's JSON")),
        }
    }

    /// The right side of `Item = T` or `N = 4`.
    fn term(&self, term: &Value) -> Result<String, String> {
        match variant(term)? {
            ("type", ty) => self.ty(ty),
            ("constant", constant) => Ok(text(constant, "expr")?.to_string()),
            (other, _) => Err(format!("unknown term `{other}` in rustdoc's JSON")),
        }
    }

    /// Bounds joined by `+`: traits (with `for<'a>`, `?`), lifetimes, `use<..>`.
    fn bounds(&self, bounds: &[Value]) -> Result<String, String> {
        let mut parts = Vec::new();
        for bound in bounds {
            parts.push(match variant(bound)? {
                ("trait_bound", bound) => {
                    let modifier = match bound.get("modifier").and_then(Value::as_str) {
                        Some("maybe") => "?",
                        Some("maybe_const") => "~const ",
                        _ => "",
                    };
                    format!(
                        "{}{modifier}{}",
                        self.binder(list(bound, "generic_params")?)?,
                        self.path(field(bound, "trait")?)?
                    )
                }
                ("outlives", lifetime) => {
                    lifetime.as_str().ok_or("a lifetime without a name")?.to_string()
                }
                ("use", captured) => {
                    let mut names = Vec::new();
                    for arg in captured.as_array().ok_or("`use<..>` without arguments")? {
                        let name = match arg {
                            Value::String(name) => name,
                            arg => variant(arg)?.1.as_str().ok_or("`use<..>` of nothing")?,
                        };
                        names.push(name.to_string());
                    }
                    format!("use<{}>", names.join(", "))
                }
                (other, _) => return Err(format!("unknown bound `{other}` in rustdoc's JSON")),
            });
        }
        Ok(parts.join(" + "))
    }

    /// `for<'a> ` over `params`, or nothing.
    fn binder(&self, params: &[Value]) -> Result<String, String> {
        let params = self.parameters(params)?;
        Ok(if params.is_empty() { String::new() } else { format!("for<{}> ", params.join(", ")) })
    }

    /// An item's generic parameters and where clause: `<T: Bound>` and ` where T: Other`.
    fn declaration(&self, generics: &Value) -> Result<(String, String), String> {
        Ok((self.generics(generics)?, where_clause(self.predicates(generics)?)))
    }

    /// `: A + B` for the bounds of a trait or an associated type, or nothing.
    fn supertraits(&self, bounds: &[Value]) -> Result<String, String> {
        Ok(if bounds.is_empty() { String::new() } else { format!(": {}", self.bounds(bounds)?) })
    }

    /// The generic parameters of an item, `<'a, T: Bound, const N: usize>`, or nothing. The
    /// parameters the compiler makes for `impl Trait` arguments are left out: the arguments
    /// show them.
    fn generics(&self, generics: &Value) -> Result<String, String> {
        let params = self.parameters(list(generics, "params")?)?;
        Ok(if params.is_empty() { String::new() } else { format!("<{}>", params.join(", ")) })
    }

    fn parameters(&self, params: &[Value]) -> Result<Vec<String>, String> {
        let mut parts = Vec::new();
        for param in params {
            let name = text(param, "name")?;
            parts.push(match variant(field(param, "kind")?)? {
                ("lifetime", lifetime) => {
                    let outlives = strings(list(lifetime, "outlives")?);
                    if outlives.is_empty() {
                        name.to_string()
                    } else {
                        format!("{name}: {}", outlives.join(" + "))
                    }
                }
                ("type", ty) => {
                    if flag(ty, "is_synthetic")? {
                        continue;
                    }
                    let bounds = list(ty, "bounds")?;
                    let mut part = name.to_string();
                    if !bounds.is_empty() {
                        part.push_str(&format!(": {}", self.bounds(bounds)?));
                    }
                    if let Some(default) = ty.get("default").filter(|d| !d.is_null()) {
                        part.push_str(&format!(" = {}", self.ty(default)?));
                    }
                    part
                }
                ("const", constant) => {
                    let mut part = format!("const {name}: {}", self.ty(field(constant, "type")?)?);
                    if let Some(default) = constant.get("default").and_then(Value::as_str) {
                        part.push_str(&format!(" = {default}"));
                    }
                    part
                }
                (other, _) => {
                    return Err(format!("unknown generic parameter `{other}` in rustdoc's JSON"))
                }
            });
        }
        Ok(parts)
    }

    /// The bounds of an impl's parameters as where predicates (`T: Bound`), for its methods.
    fn parameter_bounds(&self, generics: &Value) -> Result<Vec<String>, String> {
        let mut predicates = Vec::new();
        for param in list(generics, "params")? {
            let name = text(param, "name")?;
            match variant(field(param, "kind")?)? {
                ("lifetime", lifetime) => {
                    let outlives = strings(list(lifetime, "outlives")?);
                    if !outlives.is_empty() {
                        predicates.push(format!("{name}: {}", outlives.join(" + ")));
                    }
                }
                ("type", ty) => {
                    let bounds = list(ty, "bounds")?;
                    if !bounds.is_empty() {
                        predicates.push(format!("{name}: {}", self.bounds(bounds)?));
                    }
                }
                _ => {}
            }
        }
        Ok(predicates)
    }

    /// The where predicates of an item.
    fn predicates(&self, generics: &Value) -> Result<Vec<String>, String> {
        let mut predicates = Vec::new();
        for predicate in list(generics, "where_predicates")? {
            predicates.push(match variant(predicate)? {
                ("bound_predicate", bound) => format!(
                    "{}{}: {}",
                    self.binder(list(bound, "generic_params")?)?,
                    self.ty(field(bound, "type")?)?,
                    self.bounds(list(bound, "bounds")?)?
                ),
                ("lifetime_predicate", lifetime) => format!(
                    "{}: {}",
                    text(lifetime, "lifetime")?,
                    strings(list(lifetime, "outlives")?).join(" + ")
                ),
                ("eq_predicate", equal) => format!(
                    "{} = {}",
                    self.ty(field(equal, "lhs")?)?,
                    self.term(field(equal, "rhs")?)?
                ),
                (other, _) => return Err(format!("unknown predicate `{other}` in rustdoc's JSON")),
            });
        }
        Ok(predicates)
    }

    fn item(&self, id: &str) -> Result<&'a Value, String> {
        self.index.get(id).ok_or_else(|| format!("no item {id} in rustdoc's JSON"))
    }

    fn kind(&self, id: &str) -> Result<&'a str, String> {
        Ok(variant(field(self.item(id)?, "inner")?)?.0)
    }
}

/// ` where A, B` over `predicates`, or nothing.
fn where_clause(predicates: Vec<String>) -> String {
    if predicates.is_empty() {
        String::new()
    } else {
        format!(" where {}", predicates.join(", "))
    }
}

/// The attributes a line shows: `#[deprecated]` and `#[non_exhaustive]`, which change what a
/// user may write, and `#[repr(..)]`, which says what the layout is.
fn attributes(item: &Value) -> String {
    let mut text = String::new();
    if item.get("deprecation").is_some_and(|deprecation| !deprecation.is_null()) {
        text.push_str("#[deprecated] ");
    }
    if has_attribute(item, "non_exhaustive") {
        text.push_str("#[non_exhaustive] ");
    }
    let attrs = item.get("attrs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for attr in attrs {
        match attr {
            Value::String(attr) if attr.starts_with("#[repr(") => {
                text.push_str(&format!("{attr} "))
            }
            Value::Object(attr) => {
                if let Some(repr) = attr.get("repr") {
                    text.push_str(&format!("#[repr({})] ", representation(repr)));
                }
            }
            _ => {}
        }
    }
    text
}

/// What `#[repr(..)]` says, from rustdoc's `{"kind": "c", "int": null, "align": 8, ..}`.
fn representation(repr: &Value) -> String {
    let mut parts = Vec::new();
    match repr.get("kind").and_then(Value::as_str) {
        Some("c") => parts.push("C".to_string()),
        Some("rust") | None => {}
        Some(kind) => parts.push(kind.to_string()),
    }
    if let Some(int) = repr.get("int").and_then(Value::as_str) {
        parts.push(int.to_string());
    }
    for name in ["align", "packed"] {
        if let Some(bytes) = repr.get(name).and_then(Value::as_u64) {
            parts.push(format!("{name}({bytes})"));
        }
    }
    parts.join(", ")
}

/// ` = value` of a constant, or nothing when rustdoc gives no value.
fn constant_value(constant: &Value) -> String {
    let value = constant.get("value").and_then(Value::as_str);
    let expr = constant.get("expr").and_then(Value::as_str).filter(|expr| *expr != "_");
    assigned(value.or(expr))
}

/// ` = value`, or nothing.
fn assigned(value: Option<&str>) -> String {
    value.map(|value| format!(" = {value}")).unwrap_or_default()
}

fn is_public(item: &Value) -> bool {
    item.get("visibility").and_then(Value::as_str) == Some("public")
}

/// Whether the item is `#[doc(hidden)]`. Rustdoc leaves such items out of its output; this
/// keeps any it would keep out of the listing too.
fn is_hidden(item: &Value) -> bool {
    has_attribute(item, "doc(hidden)")
}

/// Whether the item has the attribute `name`: rustdoc writes the ones it knows as a name
/// (`"non_exhaustive"`), and the others as source text (`{"other": "#[doc(hidden)]"}`).
fn has_attribute(item: &Value, name: &str) -> bool {
    let attrs = item.get("attrs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    attrs.iter().any(|attr| match attr {
        Value::String(attr) => attr == name || attr.contains(&format!("#[{name}]")),
        Value::Object(attr) => {
            attr.values().any(|text| text.as_str().is_some_and(|text| text.contains(name)))
        }
        _ => false,
    })
}

/// An item's definition path from the crate's `paths`: `core::ptr::non_null::NonNull`.
fn definition_path(summary: &Value) -> Option<String> {
    let segments = summary.get("path")?.as_array()?;
    Some(segments.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("::"))
}

/// An id, which rustdoc writes as a number (as a string in older formats), as the `index` key.
fn key(id: &Value) -> Result<String, String> {
    match id {
        Value::Number(number) => Ok(number.to_string()),
        Value::String(id) => Ok(id.clone()),
        other => Err(format!("not an id in rustdoc's JSON: {}", shown(other))),
    }
}

/// The variant of an enum of rustdoc's JSON and what it holds: `{"kind": {...}}`, or `"kind"`
/// for one that holds nothing.
fn variant(value: &Value) -> Result<(&str, &Value), String> {
    match value {
        Value::String(kind) => Ok((kind, &NULL)),
        Value::Object(map) if map.len() == 1 => map
            .iter()
            .next()
            .map(|(kind, inner)| (kind.as_str(), inner))
            .ok_or_else(|| "an empty object in rustdoc's JSON".to_string()),
        other => Err(format!("unexpected value in rustdoc's JSON: {}", shown(other))),
    }
}

fn field<'v>(value: &'v Value, name: &str) -> Result<&'v Value, String> {
    value.get(name).ok_or_else(|| format!("no `{name}` in rustdoc's JSON: {}", shown(value)))
}

fn text<'v>(value: &'v Value, name: &str) -> Result<&'v str, String> {
    field(value, name)?
        .as_str()
        .ok_or_else(|| format!("`{name}` is not a string: {}", shown(value)))
}

fn flag(value: &Value, name: &str) -> Result<bool, String> {
    field(value, name)?
        .as_bool()
        .ok_or_else(|| format!("`{name}` is not a boolean: {}", shown(value)))
}

fn list<'v>(value: &'v Value, name: &str) -> Result<&'v [Value], String> {
    field(value, name)?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("`{name}` is not a list: {}", shown(value)))
}

fn strings(values: &[Value]) -> Vec<&str> {
    values.iter().filter_map(Value::as_str).collect()
}

/// The start of a value, for an error message.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// The lines that differ between `old` and `new`, in the unified format: hunks headed
/// `@@ -line,count +line,count @@`, with `-` before a removed line, `+` before an added one, and
/// [`CONTEXT`] unchanged lines around the changes. Empty when the texts have the same lines.
fn diff(old: &str, new: &str) -> String {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let script = edit_script(&old, &new);

    // The changes with their context, as ranges of the script, joined where they touch.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for (at, _) in script.iter().enumerate().filter(|(_, (sign, _))| *sign != ' ') {
        let (start, end) = (at.saturating_sub(CONTEXT), (at + CONTEXT + 1).min(script.len()));
        match hunks.last_mut() {
            Some(last) if last.1 >= start => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }

    let mut text = String::new();
    for (start, end) in hunks {
        // Line numbers, from 1, of the hunk's first line in each text.
        let old_start = 1 + script[..start].iter().filter(|(sign, _)| *sign != '+').count();
        let new_start = 1 + script[..start].iter().filter(|(sign, _)| *sign != '-').count();
        let hunk = &script[start..end];
        let old_count = hunk.iter().filter(|(sign, _)| *sign != '+').count();
        let new_count = hunk.iter().filter(|(sign, _)| *sign != '-').count();
        // An empty side is numbered by the line before it, as `diff -u` does.
        let old_start = if old_count == 0 { old_start - 1 } else { old_start };
        let new_start = if new_count == 0 { new_start - 1 } else { new_start };
        text.push_str(&format!("@@ -{old_start},{old_count} +{new_start},{new_count} @@\n"));
        for (sign, line) in hunk {
            text.push_str(&format!("{sign}{line}\n"));
        }
    }
    text
}

/// A shortest way from `old` to `new`: each line of either, in order, after ` ` if both have
/// it, `-` if only `old` does, `+` if only `new` does. The lines both start and end with are
/// set aside first, so that the table of common subsequences covers only what changed.
fn edit_script<'t>(old: &[&'t str], new: &[&'t str]) -> Vec<(char, &'t str)> {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (a, b) = (&old[prefix..old.len() - suffix], &new[prefix..new.len() - suffix]);

    // common[i][j]: the length of the longest common subsequence of a[i..] and b[j..].
    let width = b.len() + 1;
    let mut common = vec![0u32; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i * width + j] = if a[i] == b[j] {
                common[(i + 1) * width + j + 1] + 1
            } else {
                common[(i + 1) * width + j].max(common[i * width + j + 1])
            };
        }
    }

    let mut script: Vec<(char, &str)> = old[..prefix].iter().map(|line| (' ', *line)).collect();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            script.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if j == b.len()
            || (i < a.len() && common[(i + 1) * width + j] >= common[i * width + j + 1])
        {
            script.push(('-', a[i]));
            i += 1;
        } else {
            script.push(('+', b[j]));
            j += 1;
        }
    }
    script.extend(old[old.len() - suffix..].iter().map(|line| (' ', *line)));
    script
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_same_lines_make_no_diff() {
        assert_eq!(diff("a\nb\n", "a\nb\n"), "");
        assert_eq!(diff("", ""), "");
    }

    #[test]
    fn a_changed_line_shows_with_its_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\n";
        assert_eq!(diff(old, new), "@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n");
    }

    #[test]
    fn distant_changes_make_separate_hunks() {
        let old: String = (1..=20).map(|n| format!("l{n}\n")).collect();
        let new = old.replace("l2\n", "x2\n").replace("l18\n", "x18\n");
        assert_eq!(
            diff(&old, &new),
            "@@ -1,5 +1,5 @@\n l1\n-l2\n+x2\n l3\n l4\n l5\n\
             @@ -15,6 +15,6 @@\n l15\n l16\n l17\n-l18\n+x18\n l19\n l20\n"
        );
    }

    #[test]
    fn lines_added_to_nothing_and_removed_to_nothing() {
        assert_eq!(diff("", "a\nb\n"), "@@ -0,0 +1,2 @@\n+a\n+b\n");
        assert_eq!(diff("a\nb\n", ""), "@@ -1,2 +0,0 @@\n-a\n-b\n");
    }

    #[test]
    fn a_moved_line_is_removed_and_added_once() {
        assert_eq!(diff("a\nb\nc\n", "b\nc\na\n"), "@@ -1,3 +1,3 @@\n-a\n b\n c\n+a\n");
    }

    /// The rustdoc JSON of a crate `demo`: a generic struct with a public field, a method and
    /// impls; an enum; a trait and its impl for a primitive; an `extern "C"` function; a public
    /// module that re-exports the struct; a re-export of another crate's item. And what is not
    /// listed: a hidden function, a private struct, the derived impl of an unstable auto trait,
    /// a blanket impl.
    const DEMO: &str = r##"{
      "root": 0,
      "format_version": 57,
      "index": {
        "0": {"id": 0, "name": "demo", "visibility": "public", "attrs": [], "deprecation": null, "inner": {"module": {"is_crate": true, "items": [1, 5, 6, 7, 9, 11, 18, 21], "is_stripped": false}}},
        "1": {"id": 1, "name": "Pool", "visibility": "public", "attrs": [], "deprecation": null, "inner": {"struct": {"generics": {"params": [{"name": "S", "kind": {"type": {"bounds": [], "default": null, "is_synthetic": false}}}], "where_predicates": []}, "kind": {"plain": {"fields": [2], "has_stripped_fields": true}}, "impls": [3, 4, 12, 13]}}},
        "2": {"id": 2, "name": "limit", "visibility": "public", "attrs": [], "deprecation": null, "inner": {"struct_field": {"resolved_path": {"path": "Option", "id": 101, "args": {"angle_bracketed": {"args": [{"type": {"primitive": "usize"}}], "constraints": []}}}}}},
        "3": {"id": 3, "name": null, "visibility": "default", "attrs": [], "deprecation": null, "inner": {"impl": {"is_unsafe": false, "generics": {"params": [{"name": "S", "kind": {"type": {"bounds": [{"trait_bound": {"trait": {"path": "Source", "id": 11, "args": null}, "generic_params": [], "modifier": "none"}}], "default": null, "is_synthetic": false}}}], "where_predicates": []}, "provided_trait_methods": [], "trait": null, "for": {"resolved_path": {"path": "Pool", "id": 1, "args": {"angle_bracketed": {"args": [{"type": {"generic": "S"}}], "constraints": []}}}}, "items": [10], "is_negative": false, "is_synthetic": false, "blanket_impl": null}}},
        "10": {"id": 10, "name": "alloc", "visibility": "public", "attrs": [], "deprecation": null, "inner": {"function": {"sig": {"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": false, "type": {"generic": "Self"}}}], ["size", {"primitive": "usize"}]], "output": {"resolved_path": {"path": "Option", "id": 101, "args": {"angle_bracketed": {"args": [{"type": {"resolved_path": {"path": "NonNull", "id": 102, "args": {"angle_bracketed": {"args": [{"type": {"primitive": "u8"}}], "constraints": []}}}}}], "constraints": []}}}}, "is_c_variadic": false}, "generics": {"params": [], "where_predicates": []}, "header": {"is_const": false, "is_unsafe": false, "is_async": false, "abi": "Rust"}, "has_body": true}}},
        "4": {"id": 4, "name": null, "visibility": "default", "attrs": [], "deprecation": null, "inner": {"impl": {"is_unsafe": false, "generics": {"params": [{"name": "S", "kind": {"type": {"bounds": [], "default": null, "is_synthetic": false}}}], "where_predicates": [{"bound_predicate": {"type": {"generic": "S"}, "bounds": [{"trait_bound": {"trait": {"path": "Send", "id": 103, "args": null}, "generic_params": [], "modifier": "none"}}], "generic_params": []}}]}, "provided_trait_methods": [], "trait": {"path": "Send", "id": 103, "args": null}, "for": {"resolved_path": {"path": "Pool", "id": 1, "args": {"angle_bracketed": {"args": [{"type": {"generic": "S"}}], "constraints": []}}}}, "items": [], "is_negative": false, "is_synthetic": true, "blanket_impl": null}}},
        "12": {"id": 12, "name": null, "visibility": "default", "attrs": [], "deprecation": null, "inner": {"impl": {"is_unsafe": false, "generics": {"params": [], "where_predicates": []}, "provided_trait_methods": [], "trait": {"path": "Freeze", "id": 104, "args": null}, "for": {"resolved_path": {"path": "Pool", "id": 1, "args": null}}, "items": [], "is_negative": false, "is_synthetic": true, "blanket_impl": null}}},
        "13": {"id": 13, "name": null, "visibility": "default", "attrs": [], "deprecation": null, "inner": {"impl": {"is_unsafe": false, "generics": {"params": [], "where_predicates": []}, "provided_trait_methods": [], "trait": {"path": "From", "id": 106, "args": null}, "for": {"generic": "T"}, "items": [], "is_negative": false, "is_synthetic": false, "blanket_impl": {"generic": "T"}}}},
        "5": {"id": 5, "name": null, "visibility": "public", "attrs": [], "deprecation": null, "inner": {"use": {"source": "other::Thing", "name": "Thing", "id": 100, "is_glob": false}}},
        "6": {"id": 6, "name": "secret", "visibility": "public", "attrs": [{"other": "#[doc(hidden)]"}], "deprecation": null, "inner": {"function": {"sig": {"inputs": [], "output": null, "is_c_variadic": false}, "generics": {"params": [], "where_predicates": []}, "header": {"is_const": false, "is_unsafe": false, "is_async": false, "abi": "Rust"}, "has_body": true}}},
        "7": {"id": 7, "name": "Error", "visibility": "public", "attrs": ["non_exhaustive", {"repr": {"kind": "rust", "align": null, "packed": null, "int": "u8"}}], "deprecation": null, "inner": {"enum": {"generics": {"params": [], "where_predicates": []}, "has_stripped_variants": false, "variants": [8, 14], "impls": [15]}}},
        "8": {"id": 8, "name": "Empty", "visibility": "default", "attrs": [], "deprecation": null, "inner": {"variant": {"kind": "plain", "discriminant": null}}},
        "14": {"id": 14, "name": "Os", "visibility": "default", "attrs": [], "deprecation": null, "inner": {"variant": {"kind": {"tuple": [16]}, "discriminant": null}}},
        "16": {"id": 16, "name": "0", "visibility": "default", "attrs": [], "deprecation": null, "inner": {"struct_field": {"primitive": "i32"}}},
        "15": {"id": 15, "name": null, "visibility": "default", "attrs": [], "deprecation": null, "inner": {"impl": {"is_unsafe": false, "generics": {"params": [], "where_predicates": []}, "provided_trait_methods": [], "trait": {"path": "fmt::Display", "id": 105, "args": null}, "for": {"resolved_path": {"path": "Error", "id": 7, "args": null}}, "items": [], "is_negative": false, "is_synthetic": false, "blanket_impl": null}}},
        "9": {"id": 9, "name": "free", "visibility": "public", "attrs": [], "deprecation": null, "inner": {"function": {"sig": {"inputs": [["block", {"resolved_path": {"path": "NonNull", "id": 102, "args": {"angle_bracketed": {"args": [{"type": {"primitive": "u8"}}], "constraints": []}}}}]], "output": null, "is_c_variadic": false}, "generics": {"params": [], "where_predicates": []}, "header": {"is_const": false, "is_unsafe": true, "is_async": false, "abi": {"C": {"unwind": false}}}, "has_body": true}}},
        "11": {"id": 11, "name": "Source", "visibility": "public", "attrs": [], "deprecation": null, "inner": {"trait": {"is_auto": false, "is_unsafe": true, "is_dyn_compatible": true, "items": [17, 19], "generics": {"params": [], "where_predicates": []}, "bounds": [], "implementations": [20]}}},
        "17": {"id": 17, "name": "size", "visibility": "default", "attrs": [], "deprecation": null, "inner": {"function": {"sig": {"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": false, "type": {"generic": "Self"}}}]], "output": {"primitive": "usize"}, "is_c_variadic": false}, "generics": {"params": [], "where_predicates": []}, "header": {"is_const": false, "is_unsafe": false, "is_async": false, "abi": "Rust"}, "has_body": false}}},
        "19": {"id": 19, "name": "trim", "visibility": "default", "attrs": [], "deprecation": null, "inner": {"function": {"sig": {"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": true, "type": {"generic": "Self"}}}]], "output": null, "is_c_variadic": false}, "generics": {"params": [], "where_predicates": []}, "header": {"is_const": false, "is_unsafe": false, "is_async": false, "abi": "Rust"}, "has_body": true}}},
        "20": {"id": 20, "name": null, "visibility": "default", "attrs": [], "deprecation": null, "inner": {"impl": {"is_unsafe": false, "generics": {"params": [], "where_predicates": []}, "provided_trait_methods": [], "trait": {"path": "Source", "id": 11, "args": null}, "for": {"primitive": "u8"}, "items": [], "is_negative": false, "is_synthetic": false, "blanket_impl": null}}},
        "18": {"id": 18, "name": "Private", "visibility": "crate", "attrs": [], "deprecation": null, "inner": {"struct": {"generics": {"params": [], "where_predicates": []}, "kind": "unit", "impls": []}}},
        "21": {"id": 21, "name": "pool", "visibility": "public", "attrs": [], "deprecation": null, "inner": {"module": {"is_crate": false, "items": [1], "is_stripped": false}}}
      },
      "paths": {
        "1": {"crate_id": 0, "path": ["demo", "pool", "Pool"], "kind": "struct"},
        "100": {"crate_id": 1, "path": ["other", "inner", "Thing"], "kind": "struct"},
        "101": {"crate_id": 2, "path": ["core", "option", "Option"], "kind": "enum"},
        "102": {"crate_id": 2, "path": ["core", "ptr", "NonNull"], "kind": "struct"},
        "103": {"crate_id": 2, "path": ["core", "marker", "Send"], "kind": "trait"},
        "104": {"crate_id": 2, "path": ["core", "marker", "Freeze"], "kind": "trait"},
        "105": {"crate_id": 2, "path": ["core", "fmt", "Display"], "kind": "trait"},
        "106": {"crate_id": 2, "path": ["core", "convert", "From"], "kind": "trait"}
      }
    }"##;

    fn demo() -> Value {
        serde_json::from_str(DEMO).unwrap()
    }

    #[test]
    fn a_crate_is_listed_item_by_item() {
        let mut known = HashMap::from([("other::inner::Thing".into(), "other::Thing".into())]);
        let listing = listing("demo", &demo(), &mut known).unwrap();
        let expected = [
            "// The public API of demo on Linux (default features), from nightly rustdoc's JSON: \
             written by `cargo xtask public-api --bless`.",
            "pub mod demo",
            "#[non_exhaustive] #[repr(u8)] pub enum demo::Error",
            "pub demo::Error::Empty",
            "pub demo::Error::Os(i32)",
            "impl core::fmt::Display for demo::Error",
            "pub struct demo::Pool<S>",
            "pub fn demo::Pool<S>::alloc(&self, usize) -> \
             core::option::Option<core::ptr::NonNull<u8>> where S: demo::Source",
            "pub demo::Pool::limit: core::option::Option<usize>",
            "impl<S> core::marker::Send for demo::Pool<S> where S: core::marker::Send",
            "pub unsafe trait demo::Source",
            "pub fn demo::Source::size(&self) -> usize",
            "pub fn demo::Source::trim(&mut self) { ... }",
            "impl demo::Source for u8",
            "pub use demo::Thing = other::Thing",
            "pub unsafe extern \"C\" fn demo::free(core::ptr::NonNull<u8>)",
            "pub mod demo::pool",
            "pub use demo::pool::Pool = demo::Pool",
        ];
        assert_eq!(listing.lines().collect::<Vec<_>>(), expected);
        // The crates listed after this one name its struct by its public path.
        assert_eq!(known.get("demo::pool::Pool").map(String::as_str), Some("demo::Pool"));
    }

    #[test]
    fn an_unknown_kind_of_type_is_an_error() {
        let mut json = demo();
        json["index"]["9"]["inner"]["function"]["sig"]["output"] = json!({ "mystery": {} });
        let error = listing("demo", &json, &mut HashMap::new()).unwrap_err();
        assert!(error.contains("demo::free: unknown type kind `mystery`"), "{error}");
    }
}
