//! The crate's layering, checked from its own source: every `crate::module` path in a top-level
//! module's files is an edge from that module to the named one. The edges must form no cycle,
//! the lower layers never reach a transport or the configuration, and only the HTTP adapter's
//! callers (start-up wiring, the serve loop) name `http`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that serve the outside world in one protocol each.
const TRANSPORTS: &[&str] = &["http", "grpc", "ws", "lambda"];

/// Modules that know nothing of transports, the app or how it is configured.
const LOWER: &[&str] = &[
    "chat",
    "provider",
    "store",
    "limits",
    "push",
    "telemetry",
    "pipeline",
    "lifecycle",
    "tcp",
    "web",
];

/// The only modules that may name `http` besides `http` itself: start-up wiring (the Lambda
/// functions that serve the router are built there) and the serve loop.
const HTTP_USERS: &[&str] = &["wiring", "serve"];

/// Above everything: nothing below may name them.
const TOP: &[&str] = &["config", "wiring", "serve", "app"];

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `path` (a file, or a module directory).
fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap().flatten() {
        out.extend(files(&entry.path()));
    }
    out.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    out
}

/// Top-level module → the top-level modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = source_dir();
    let modules: BTreeMap<String, PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_owned();
            let skip = matches!(name.as_str(), "lib" | "bin" | "layers");
            (!skip).then_some((name, p))
        })
        .collect();
    let mut edges = BTreeMap::new();
    for (module, path) in &modules {
        let mut named = BTreeSet::new();
        for file in files(path) {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines() {
                // Comments may mention other modules (doc links); only code is an import.
                let code = line.split("//").next().unwrap_or("");
                for piece in code.split("crate::").skip(1) {
                    let target: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if target != *module && modules.contains_key(&target) {
                        named.insert(target);
                    }
                }
            }
        }
        edges.insert(module.clone(), named);
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let here = path.last().cloned().unwrap_or_else(|| start.to_owned());
    for next in graph.get(&here).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_from(graph, start, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other_directly_or_through_others() {
    let graph = graph();
    assert!(graph.len() > 10, "found too few modules: {graph:?}");
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(cycle) = cycle_from(&graph, module, &mut path) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn lower_layers_never_import_a_transport_the_app_or_the_config() {
    let graph = graph();
    for module in LOWER {
        let named = &graph[*module];
        for forbidden in TRANSPORTS.iter().chain(TOP) {
            assert!(
                !named.contains(*forbidden),
                "{module} imports {forbidden}: {named:?}"
            );
        }
    }
}

#[test]
fn only_the_wiring_and_the_serve_loop_import_http() {
    for (module, named) in graph() {
        if named.contains("http") {
            assert!(
                HTTP_USERS.contains(&module.as_str()),
                "{module} imports http"
            );
        }
    }
}

#[test]
fn transports_never_import_each_other_or_the_config() {
    let graph = graph();
    for module in TRANSPORTS {
        let named = &graph[*module];
        for other in TRANSPORTS.iter().filter(|t| *t != module) {
            // `ws` is the WebSocket protocol: `/v1/ws` (on the HTTP server) and the Lambda
            // WebSocket function both speak it.
            if *other == "ws" && matches!(*module, "http" | "lambda") {
                continue;
            }
            assert!(!named.contains(*other), "{module} imports {other}");
        }
        for top in ["config", "wiring", "serve"] {
            assert!(!named.contains(top), "{module} imports {top}");
        }
    }
}

#[test]
fn the_check_sees_an_edge_that_exists() {
    // The pipeline calls the model: if this edge went missing the parser is broken, not the code.
    assert!(graph()["pipeline"].contains("provider"));
}
