//! Loading flow files: read, parse with positions, compile, analyse.
//!
//! Everything found is reported at once, each problem with file, line and
//! column, so an admin fixes a flow set in one round rather than one error
//! per run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::analysis;
use super::compile::{compile_flow, FlowNames, Prompts};
use super::graph::FlowSet;
use super::model::FlowFile;
use super::position::PositionIndex;
use crate::diagnostic::{self, Diagnostic, Position};

/// Where flows find the files they refer to.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The directory with the prompt files (`NAME.wav`).
    pub prompts_dir: PathBuf,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            prompts_dir: PathBuf::from("prompts"),
        }
    }
}

/// The result of loading: the flow set (when it could be built at all) and
/// every problem found.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled flows, when every reference in them resolved. It is
    /// still `Some` when the only errors are whole-set findings (a loop that
    /// never waits, a variable never set), which the interpreter survives;
    /// a server refuses any set with errors all the same.
    pub set: Option<FlowSet>,
    /// Errors and warnings, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The flow set and its warnings, or every diagnostic when there is an
    /// error.
    pub fn into_result(self) -> Result<(FlowSet, Vec<Diagnostic>), Vec<Diagnostic>> {
        if self.has_errors() {
            return Err(self.diagnostics);
        }
        match self.set {
            Some(set) => Ok((set, self.diagnostics)),
            None => Err(self.diagnostics),
        }
    }
}

/// One parsed file.
pub(crate) struct Parsed {
    pub path: PathBuf,
    pub index: PositionIndex,
    pub def: FlowFile,
}

/// Loads files and directories (every `*.yaml`/`*.yml` below them).
pub fn load_paths(paths: &[PathBuf], options: &LoadOptions) -> Loaded {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files, &mut diagnostics);
    }
    files.sort();
    files.dedup();
    if files.is_empty() && diagnostics.is_empty() {
        let shown = paths.first().cloned().unwrap_or_else(|| PathBuf::from("."));
        diagnostics.push(Diagnostic::error(
            &shown,
            Position::default(),
            "no flow files (*.yaml, *.yml) found here",
        ));
    }
    let mut sources = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push((file, text)),
            Err(e) => diagnostics.push(Diagnostic::error(
                &file,
                Position::default(),
                format!("cannot read the file: {e}"),
            )),
        }
    }
    let mut loaded = load_sources(&sources, options);
    loaded.diagnostics.extend(diagnostics);
    diagnostic::sort(&mut loaded.diagnostics);
    loaded
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    if path.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    path,
                    Position::default(),
                    format!("cannot read the directory: {e}"),
                ));
                return;
            }
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let is_yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            if p.is_dir() || is_yaml {
                collect_files(&p, files, diagnostics);
            }
        }
    } else if path.exists() {
        files.push(path.to_path_buf());
    } else {
        diagnostics.push(Diagnostic::error(
            path,
            Position::default(),
            "no such file or directory",
        ));
    }
}

/// Loads flows from in-memory texts; `path` is used for messages and to find
/// list files next to the flow.
pub fn load_sources(sources: &[(PathBuf, String)], options: &LoadOptions) -> Loaded {
    let mut diagnostics = Vec::new();
    let mut parsed = Vec::new();
    for (path, text) in sources {
        if let Some(p) = parse(path, text, &mut diagnostics) {
            parsed.push(p);
        }
    }

    // Names first, so that `goto` can point at flows defined in later files.
    let mut names = FlowNames::default();
    let mut kept = Vec::new();
    for p in parsed {
        let Some(name) = p.def.flow.clone() else {
            diagnostics.push(Diagnostic::error(
                &p.path,
                p.index.value(""),
                "the file has no `flow:` name; every flow needs a unique name",
            ));
            continue;
        };
        if let Some(first) = names.flows.get(&name) {
            let first_file = &kept_path(&kept, *first);
            diagnostics.push(Diagnostic::error(
                &p.path,
                p.index.value("flow"),
                format!(
                    "a flow named `{name}` is already defined in {}",
                    first_file.display()
                ),
            ));
            continue;
        }
        let nodes: HashMap<String, u32> = p
            .def
            .nodes
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i as u32))
            .collect();
        names.flows.insert(name, kept.len() as u32);
        names.nodes.push(nodes);
        kept.push(p);
    }

    let mut set = FlowSet::default();
    let mut prompts = Prompts::new(&options.prompts_dir);
    let mut refs = Vec::new();
    for (i, p) in kept.iter().enumerate() {
        let flow = compile_flow(
            i as u32,
            p,
            &names,
            &mut prompts,
            &mut refs,
            &mut diagnostics,
        );
        set.flows.push(flow);
    }
    set.by_name = names
        .flows
        .iter()
        .map(|(name, i)| (name.clone(), *i))
        .collect();
    let (names, files) = prompts.into_parts();
    set.prompt_names = names;
    set.prompt_files = files;

    analysis::resolve_flow_starts(&mut set);
    // Only a graph whose every reference resolved may be handed out: the
    // interpreter indexes by these references.
    let well_formed = !diagnostics.iter().any(Diagnostic::is_error);
    analysis::check_variables(&set, &refs, &mut diagnostics);
    analysis::check_reachability(&set, &mut diagnostics);
    analysis::check_spin_loops(&set, &mut diagnostics);

    diagnostic::sort(&mut diagnostics);
    Loaded {
        set: well_formed.then_some(set),
        diagnostics,
    }
}

fn kept_path(kept: &[Parsed], index: u32) -> PathBuf {
    kept.get(index as usize)
        .map(|p| p.path.clone())
        .unwrap_or_default()
}

/// Parses one file into the model; syntax and shape errors are reported with
/// the position serde_yaml gives, or the position of the path it names.
fn parse(path: &Path, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Parsed> {
    if text.trim().is_empty() {
        diagnostics.push(Diagnostic::error(
            path,
            Position { line: 1, column: 1 },
            "the file is empty; a flow needs `flow`, `start` and `nodes`",
        ));
        return None;
    }
    let index = PositionIndex::build(text);
    for (dup, place) in &index.duplicate_keys {
        let key = dup.rsplit('.').next().unwrap_or(dup);
        diagnostics.push(Diagnostic::error(
            path,
            place.key,
            format!("`{key}` is written twice here; a key may appear only once"),
        ));
    }
    let de = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, FlowFile>(de) {
        Ok(def) => Some(Parsed {
            path: path.to_path_buf(),
            index,
            def,
        }),
        Err(e) => {
            let yaml_path = e.path().to_string();
            let inner = e.inner();
            let position = match inner.location() {
                Some(loc) => Position {
                    line: loc.line(),
                    column: loc.column(),
                },
                None => index.value(&yaml_path),
            };
            let message = clean_message(&inner.to_string());
            diagnostics.push(Diagnostic::error(path, position, message));
            None
        }
    }
}

/// serde_yaml puts its own path in front ("nodes.a: ") and the position
/// inside ("at line 5 column 4"); we print the position in front instead,
/// and the position already says where, so both go.
fn clean_message(message: &str) -> String {
    let mut text = message;
    if let Some((head, rest)) = text.split_once(": ") {
        if !head.is_empty() && !head.contains(char::is_whitespace) {
            text = rest;
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let skip = after
            .find(|c: char| !(c.is_ascii_digit() || c == ' ' || "column".contains(c)))
            .unwrap_or(after.len());
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::clean_message;

    #[test]
    fn serde_yaml_paths_and_positions_are_removed_from_messages() {
        assert_eq!(
            clean_message("nodes.a: unknown field `x`, expected `y` at line 3 column 5"),
            "unknown field `x`, expected `y`"
        );
        assert_eq!(
            clean_message(
                "did not find expected ',' or '}' at line 5 column 4, while parsing a flow mapping"
            ),
            "did not find expected ',' or '}', while parsing a flow mapping"
        );
    }
}
