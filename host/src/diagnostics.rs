//! Problems found in a TOML file, reported the same way for the manifest and
//! the config: every problem at once, in file order, each at the 1-based line
//! and column (in characters) it points at, TOML syntax errors worded alike.
//! The manifest and the config keep their own error types (the field path, the
//! environment variable); where in the file and in which order is decided here.

use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, Error as TomlError};

/// Problems in one TOML text, with where each points.
#[derive(Debug)]
pub struct Diagnostics<'a, E> {
    text: &'a str,
    /// Byte offset at which each line starts.
    line_starts: Vec<usize>,
    /// Each problem with the byte offset it points at, for file order.
    found: Vec<(usize, E)>,
}

impl<'a, E> Diagnostics<'a, E> {
    pub fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Diagnostics {
            text,
            line_starts,
            found: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    /// Records a problem at `span`, built from its line and column.
    pub fn push(&mut self, span: &Range<usize>, problem: impl FnOnce(usize, usize) -> E) {
        let (line, column) = self.position(span.start);
        self.found.push((span.start, problem(line, column)));
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems in file order (those at one place in the order found).
    pub fn into_sorted(mut self) -> Vec<E> {
        self.found.sort_by_key(|(offset, _)| *offset);
        self.found.into_iter().map(|(_, e)| e).collect()
    }
}

/// Parses `text` as a TOML document, keeping every span. On syntax errors,
/// each is recorded through `problem` (line, column, message) and `None` is
/// returned: nothing else in the file is checked then.
pub fn parse_document<'a, E>(
    diagnostics: &mut Diagnostics<'a, E>,
    problem: impl Fn(usize, usize, String) -> E,
) -> Option<Spanned<DeTable<'a>>> {
    let (root, syntax) = DeTable::parse_recoverable(diagnostics.text);
    if syntax.is_empty() {
        return Some(root);
    }
    for error in syntax {
        let span = error.span().unwrap_or(0..0);
        let message = syntax_message(&error);
        diagnostics.push(&span, |line, column| problem(line, column, message));
    }
    None
}

/// How a TOML syntax error is worded, in the manifest and the config alike.
fn syntax_message(error: &TomlError) -> String {
    format!("invalid TOML: {}", error.message().trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_and_errors_come_in_file_order() {
        let text = "a = 1\nb = \"é\" x\n";
        let mut d: Diagnostics<'_, (usize, usize, String)> = Diagnostics::new(text);
        assert_eq!(d.position(0), (1, 1));
        assert_eq!(d.position(6), (2, 1));
        // `x` is the 9th character of line 2 (é is two bytes, one character).
        assert_eq!(d.position(15), (2, 9));
        assert!(parse_document(&mut d, |l, c, m| (l, c, m)).is_none());
        d.push(&(0..1), |l, c| (l, c, "first".into()));
        let found = d.into_sorted();
        assert_eq!((found[0].0, found[0].2.as_str()), (1, "first"));
        assert_eq!(found[1].0, 2);
        assert!(found[1].2.starts_with("invalid TOML: "), "{found:?}");
    }
}
