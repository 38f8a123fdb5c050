//! Golden tests: every file in `tests/broken/` holds one kind of mistake, and
//! `check` must report it with the right file:line:column and message, as
//! written in the file's `.expected` twin. `UPDATE_GOLDEN=1 cargo test`
//! rewrites the twins (then read the diff before committing it).

use std::path::{Path, PathBuf};

use callflow::flow::load_paths;

use crate::common::{options, repo};

fn render(file: &Path) -> String {
    let loaded = load_paths(&[file.to_path_buf()], &options());
    let root = repo("");
    loaded
        .diagnostics
        .iter()
        .map(|d| {
            let shown = d.file.strip_prefix(&root).unwrap_or(&d.file);
            let mut d = d.clone();
            d.file = shown.to_path_buf();
            // Messages may name absolute paths (e.g. of prompt files).
            format!("{d}\n").replace(concat!(env!("CARGO_MANIFEST_DIR"), "/"), "")
        })
        .collect()
}

#[test]
fn every_broken_file_reports_its_mistake_where_it_is() {
    let dir = repo("tests/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/broken")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the corpus holds at least 15 mistakes");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for file in &files {
        let got = render(file);
        assert!(
            !got.is_empty(),
            "{} loaded without a problem",
            file.display()
        );
        let golden = file.with_extension("expected");
        if update {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            mismatches.push(format!(
                "{}:\n--- expected\n{want}--- got\n{got}",
                file.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
