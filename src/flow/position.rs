//! Line and column of every key and value in a YAML document, by path.
//!
//! serde gives us typed values but forgets where they came from; problems
//! found after deserialising (an unknown target, a duplicate key) still need
//! a file:line:column. So the text is also run through yaml-rust2's event
//! parser, which marks every event, and the marks are indexed by path
//! (`nodes.main.menu.options.1`).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diagnostic::Position;

/// Where a map entry's key and its value start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Place {
    /// The key's position (for sequence items, the item's position).
    pub key: Position,
    /// The value's position.
    pub value: Position,
}

/// Positions of all keys and values of one document, by dotted path.
#[derive(Debug, Default)]
pub struct PositionIndex {
    places: HashMap<String, Place>,
    /// Keys that appeared twice in one mapping: (path of the second, its place).
    pub duplicate_keys: Vec<(String, Place)>,
}

impl PositionIndex {
    /// Indexes `text`. Returns an empty index if the text is not valid YAML;
    /// the serde pass reports the syntax error with its own position.
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        builder.index
    }

    /// The place of the entry at `path` (segments joined by `.`).
    pub fn get(&self, path: &str) -> Option<Place> {
        self.places.get(path).copied()
    }

    /// The value's position at `path`, or of the closest enclosing entry
    /// that exists, so a message always points somewhere sensible.
    pub fn value(&self, path: &str) -> Position {
        self.lookup(path, |p| p.value)
    }

    /// The key's position at `path`, or of the closest enclosing entry.
    pub fn key(&self, path: &str) -> Position {
        self.lookup(path, |p| p.key)
    }

    fn lookup(&self, path: &str, pick: impl Fn(&Place) -> Position) -> Position {
        // The document as a whole is reported at its first character.
        let top = Position { line: 1, column: 1 };
        if path.is_empty() {
            return top;
        }
        let mut current = path;
        loop {
            if let Some(place) = self.places.get(current) {
                return pick(place);
            }
            match current.rfind('.') {
                Some(i) => current = &current[..i],
                None => return top,
            }
        }
    }
}

/// Joins a path and a segment with `.`.
pub fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_string()
    } else {
        format!("{path}.{segment}")
    }
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, Position)>,
        seen: Vec<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    index: PositionIndex,
}

fn position(mark: &Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Builder {
    /// Handles a value (scalar, alias or container start) at `mark`; returns
    /// the path it was stored under, or `None` if it was a mapping key.
    fn value(&mut self, mark: Position, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => {
                self.index.places.insert(
                    String::new(),
                    Place {
                        key: mark,
                        value: mark,
                    },
                );
                Some(String::new())
            }
            Some(Frame::Seq { path, next }) => {
                let p = join(path, &next.to_string());
                *next += 1;
                self.index.places.insert(
                    p.clone(),
                    Place {
                        key: mark,
                        value: mark,
                    },
                );
                Some(p)
            }
            Some(Frame::Map {
                path,
                pending_key,
                seen,
            }) => match pending_key.take() {
                None => {
                    let key = scalar.unwrap_or("?").to_string();
                    let p = join(path, &key);
                    if seen.contains(&key) {
                        self.index.duplicate_keys.push((
                            p,
                            Place {
                                key: mark,
                                value: mark,
                            },
                        ));
                    } else {
                        seen.push(key.clone());
                    }
                    *pending_key = Some((key, mark));
                    None
                }
                Some((key, key_mark)) => {
                    let p = join(path, &key);
                    self.index.places.entry(p.clone()).or_insert(Place {
                        key: key_mark,
                        value: mark,
                    });
                    Some(p)
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = position(&mark);
        match ev {
            Event::Scalar(text, ..) => {
                self.value(pos, Some(&text));
            }
            Event::Alias(_) => {
                self.value(pos, Some("*alias"));
            }
            Event::MappingStart(..) => {
                // A mapping used as a key is indexed under a placeholder name.
                let path = self.value(pos, None).unwrap_or_else(|| "?".to_string());
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                    seen: Vec::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.value(pos, None).unwrap_or_else(|| "?".to_string());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_keys_and_sequence_items() {
        let text = "flow: a\nnodes:\n  main:\n    menu: { options: { 1: x, \"2\": y } }\n  list:\n    play: [a, b]\n";
        let index = PositionIndex::build(text);
        assert_eq!(index.value("flow"), Position { line: 1, column: 7 });
        assert_eq!(index.key("nodes.main"), Position { line: 3, column: 3 });
        assert_eq!(
            index.value("nodes.main.menu.options.2"),
            Position {
                line: 4,
                column: 35
            }
        );
        assert_eq!(
            index.value("nodes.list.play.1"),
            Position {
                line: 6,
                column: 15
            }
        );
    }

    #[test]
    fn missing_path_falls_back_to_enclosing_entry() {
        let index = PositionIndex::build("a:\n  b: 1\n");
        assert_eq!(index.value("a.b.c.d"), Position { line: 2, column: 6 });
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let index = PositionIndex::build("a: 1\nb: 2\na: 3\n");
        assert_eq!(index.duplicate_keys.len(), 1);
        assert_eq!(index.duplicate_keys[0].0, "a");
        assert_eq!(
            index.duplicate_keys[0].1.key,
            Position { line: 3, column: 1 }
        );
    }
}
