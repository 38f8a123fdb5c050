//! Problems found in flow files, each tied to a file, line and column.
//!
//! Admins fix flows from these messages alone, so every diagnostic names the
//! place (`file:line:column`) and says in a plain sentence what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a problem is: errors refuse the flow set, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The flow set is refused.
    Error,
    /// Worth fixing, but the flow set still loads (e.g. an unreachable node).
    Warning,
}

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1.
    pub column: usize,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// Where in the file; line 0 means the file as a whole.
    pub position: Position,
    /// A plain sentence saying what is wrong.
    pub message: String,
}

impl Diagnostic {
    /// An error at a place in a file.
    pub fn error(file: &Path, position: Position, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_path_buf(),
            position,
            message: message.into(),
        }
    }

    /// A warning at a place in a file.
    pub fn warning(file: &Path, position: Position, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, position, message)
        }
    }

    /// True for errors, which make a flow set unusable.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.position.line,
            self.position.column,
            kind,
            self.message
        )
    }
}

/// Sorts diagnostics by file and position so output is stable and readable.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.position, a.severity, &a.message)
            .cmp(&(&b.file, b.position, b.severity, &b.message))
    });
}
