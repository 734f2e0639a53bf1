//! The modules of `src/` form layers: `src/lib.rs`'s Layout lists them from the top down,
//! and each module imports only modules listed below it (so no two import each other,
//! directly or through others).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules of the Layout section, top first.
fn layout(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

/// The modules `lib.rs` declares.
fn declared(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// The source files of module `name`: `src/name.rs`, or every file under `src/name/`.
fn files_of(name: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{name}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut files = Vec::new();
    let mut dirs = vec![src().join(name)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("module folder") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level modules named by `crate::` paths in `text`, outside comments and the
/// file's test module.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inside = group.split('}').next().unwrap_or("");
                found.extend(inside.split(',').map(first_segment));
            } else {
                found.insert(first_segment(rest));
            }
        }
    }
    found.remove("");
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_module_imports_only_modules_listed_below_it() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    let order = layout(&lib);
    let modules = declared(&lib);
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(
        listed, modules,
        "src/lib.rs's Layout must list every module it declares, once"
    );
    assert_eq!(order.len(), listed.len(), "a module is listed twice");
    let position: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut upward = Vec::new();
    for (i, module) in order.iter().enumerate() {
        let files = files_of(module);
        assert!(!files.is_empty(), "no source for module {module}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source file");
            for import in imports(&text) {
                match position.get(import.as_str()) {
                    Some(&j) if j < i => upward.push(format!(
                        "{} imports `{import}`, listed above `{module}`",
                        file.display()
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn imports_are_read_from_paths_and_groups_but_not_comments() {
    let text = "use crate::queue::Queue;\nuse crate::{config, domain::EventId};\n\
                // crate::app is only named here\nlet x = crate::metrics::Metrics::new(); // crate::api\n\
                #[cfg(test)]\nmod tests {\n    use crate::state;\n}\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["config", "domain", "metrics", "queue"]);
}
