//! The module graph of `src/` has no cycles: no module uses another that uses it back, directly or
//! through others. A cycle means two modules are one concept split in two, or that a shared word (a
//! close cause, a direction) lives in one of them instead of in a leaf both can use.
//!
//! The graph is read from the source text, not from the compiler: every `crate::` path outside comments
//! (in `use` lines and inline, tests included) is an edge from the file's module to the deepest module
//! the path names. A module contains its submodules: an edge into `reactor::lookups` is also an edge
//! into `reactor`, and an edge out of it is also an edge out of `reactor`, but a module and its own
//! submodules (`reactor` and `reactor::report`, which see each other by `super::`) are one room, not a
//! cycle. `main.rs` is the binary, another crate, and so are the modules under `src/main/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// A module path, `["reactor", "report"]` for src/reactor/report.rs.
type Module = Vec<String>;

/// Every module of the library with its file's text.
fn modules(dir: &Path, prefix: &[String], found: &mut BTreeMap<Module, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src")
        .map(|entry| entry.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("utf-8 name")
            .to_string();
        if path.is_dir() {
            if prefix.is_empty() && name == "main" {
                // src/main/ holds the binary's own modules (`#[path]` from main.rs): another crate,
                // like main.rs itself, not a folder of the library.
                continue;
            }
            let mut inner = prefix.to_vec();
            inner.push(name);
            modules(&path, &inner, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let mut module = prefix.to_vec();
            let root = prefix.is_empty() && (name == "lib" || name == "main");
            if root {
                continue;
            }
            if name != "mod" {
                module.push(name);
            }
            found.insert(module, fs::read_to_string(&path).expect("read module"));
        }
    }
}

/// The text of a line before its `//` comment, if any (a `//` inside a string literal is kept).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The paths after every `crate::` in `code`: `crate::a::b::C` gives `a::b::C`, and a group
/// `crate::{a::B, c}` gives each of its items.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `edgefwd_crate::`, not a path of this crate
        }
        match after.strip_prefix('{') {
            Some(group) => paths.extend(group_items(group).into_iter().map(segments)),
            None => paths.push(segments(after)),
        }
    }
    paths
}

/// The paths after every `super::` (or `super::super::`...) in `code` of `module`, made absolute: in
/// `a::b`, `super::c::C` is `a::c::C`. Siblings inside a folder see each other this way, so a cycle
/// between them would hide from [`crate_paths`]. (In an inline `mod tests`, `super` is the file's own
/// module: read as its parent instead, it names no sibling unless one has that item's name.)
fn super_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let before = rest[..at].chars().next_back();
        let mut after = &rest[at..];
        let mut depth = 0;
        while let Some(next) = after.strip_prefix("super::") {
            depth += 1;
            after = next;
        }
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            || depth > module.len()
        {
            continue;
        }
        let base = &module[..module.len() - depth];
        let absolute = |tail: Vec<String>| [base.to_vec(), tail].concat();
        match after.strip_prefix('{') {
            Some(group) => paths.extend(group_items(group).into_iter().map(segments).map(absolute)),
            None => paths.push(absolute(segments(after))),
        }
    }
    paths
}

/// The items of a `{...}` group whose opening brace is just before `text`, split at its own commas.
fn group_items(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&text[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The leading `ident::ident::...` of `text`, up to what is not an identifier (`;`, `{`, `(`...).
fn segments(text: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut rest = text.trim_start();
    loop {
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if len == 0 {
            return found;
        }
        found.push(rest[..len].to_string());
        match rest[len..].strip_prefix("::") {
            Some(next) if next.starts_with(is_ident) => rest = next,
            _ => return found,
        }
    }
}

/// The deepest module that `path` starts with.
fn module_of(path: &[String], known: &BTreeMap<Module, String>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|prefix| known.contains_key(prefix))
}

/// Module `from` uses module `to`: the edges between every module that contains `from` and every one
/// that contains `to`, below the innermost module that contains both.
fn add_edges(from: &Module, to: &Module, graph: &mut BTreeMap<Module, BTreeSet<Module>>) {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    for outer in common + 1..=from.len() {
        for inner in common + 1..=to.len() {
            graph
                .entry(from[..outer].to_vec())
                .or_default()
                .insert(to[..inner].to_vec());
        }
    }
}

/// The dependency graph of the modules in `known`.
fn graph(known: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, text) in known {
        graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = code_of(line);
            for path in crate_paths(code)
                .into_iter()
                .chain(super_paths(code, module))
            {
                if let Some(target) = module_of(&path, known) {
                    add_edges(module, &target, &mut graph);
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one: the modules along it, `start` first.
fn cycle_through(
    start: &Module,
    graph: &BTreeMap<Module, BTreeSet<Module>>,
) -> Option<Vec<Module>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![start.clone()]];
    while let Some(route) = stack.pop() {
        let last = route.last().expect("a route has a module");
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                return Some(route);
            }
            if seen.insert(next.clone()) {
                let mut longer = route.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    let mut reported = BTreeSet::new();
    let mut found = Vec::new();
    for module in graph.keys() {
        if reported.contains(module) {
            continue;
        }
        if let Some(cycle) = cycle_through(module, graph) {
            reported.extend(cycle.iter().cloned());
            let names: Vec<String> = cycle.iter().map(|module| module.join("::")).collect();
            found.push(format!("{} -> {}", names.join(" -> "), names[0]));
        }
    }
    found
}

#[test]
fn test_no_module_uses_one_that_uses_it_back() {
    let mut known = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut known,
    );
    assert!(known.len() > 20, "modules found: {:?}", known.keys());
    let found = cycles(&graph(&known));
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The reader itself: paths, groups, comments, containment, and a cycle of three.
#[test]
fn test_the_reader_finds_paths_and_cycles() {
    let words = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        crate_paths("use crate::close::Cause;"),
        vec![words(&["close", "Cause"])]
    );
    assert_eq!(
        crate_paths("use crate::{metrics::{Metrics, X}, way};"),
        vec![words(&["metrics"]), words(&["way"])]
    );
    assert_eq!(
        crate_paths("let a = &mut crate::dns::upstream_addresses, edgefwd_crate::x"),
        vec![words(&["dns", "upstream_addresses"])]
    );
    assert_eq!(
        code_of("f(\"http://x\"); // crate::pair"),
        "f(\"http://x\"); "
    );
    let known: BTreeMap<Module, String> = [
        (words(&["a"]), "use crate::b::B;".to_string()),
        (words(&["b"]), "use crate::c::inner::C;".to_string()),
        (words(&["c"]), "use super::X;".to_string()),
        (
            words(&["c", "inner"]),
            "use crate::a; use crate::c;".to_string(),
        ),
        // A module and its own submodule are one room, not a cycle.
        (words(&["d"]), "use crate::d::inner::D;".to_string()),
        (
            words(&["d", "inner"]),
            "use crate::d::E; // crate::a".to_string(),
        ),
        // Siblings in one folder, through `super::`.
        (words(&["e"]), String::new()),
        (words(&["e", "x"]), "use super::{y::Y, Z};".to_string()),
        (words(&["e", "y"]), "use super::x::X;".to_string()),
    ]
    .into_iter()
    .collect();
    let found = cycles(&graph(&known));
    assert_eq!(
        found,
        [
            "a -> b -> c::inner -> a",
            "c -> a -> b -> c",
            "e::x -> e::y -> e::x"
        ],
        "a module contains its submodules"
    );
}
