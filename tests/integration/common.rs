//! Shared helpers: paths in the repository and loading the shipped flows.

use std::path::PathBuf;
use std::sync::Arc;

use callflow::flow::{load_paths, FlowSet, LoadOptions};

/// A path relative to the repository root.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The options the shipped flows load with.
pub fn options() -> LoadOptions {
    LoadOptions {
        prompts_dir: repo("prompts"),
    }
}

/// The shipped flows, which must load without errors or warnings.
pub fn shipped() -> Arc<FlowSet> {
    let loaded = load_paths(&[repo("flows")], &options());
    assert!(
        loaded.diagnostics.is_empty(),
        "shipped flows have problems:\n{}",
        loaded
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    Arc::new(loaded.set.expect("a flow set"))
}
