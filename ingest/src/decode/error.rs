//! The error of every decoder: what is wrong with a body, and where.

use super::nesting::{self, TooDeep};

/// A body that could not be decoded, with where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct DecodeError {
    /// 1-based line of the offending record, when known.
    pub line: Option<usize>,
    /// 1-based column, for syntax errors.
    pub column: Option<usize>,
    /// What is wrong, e.g. `whilst decoding field 'price': failed to parse "abc" as Float64`.
    pub message: String,
}

/// The longest message a decoder passes on from a library (which may quote a whole record).
const MAX_MESSAGE_CHARS: usize = 300;

impl DecodeError {
    /// An error at `line` (when known), without a column.
    pub(crate) fn at(line: Option<usize>, message: impl Into<String>) -> Self {
        DecodeError { line, column: None, message: message.into() }
    }

    /// Text nested deeper than [`nesting::MAX_NESTING`], found `first_line - 1` lines into the
    /// body.
    pub(crate) fn too_deep(at: TooDeep, first_line: usize) -> Self {
        DecodeError {
            line: Some(first_line + at.line - 1),
            column: Some(at.column),
            message: nesting::TooDeep::reason(),
        }
    }

    /// A serde_json syntax error in a record that starts on `first_line` of the body. (At the
    /// end of a body that ends with a line break serde_json says column 0: that is column 1.)
    pub(crate) fn syntax(e: serde_json::Error, first_line: usize) -> Self {
        DecodeError {
            line: Some(first_line + e.line().max(1) - 1),
            column: Some(e.column().max(1)),
            message: format!("malformed JSON: {}", strip_position(&e.to_string())),
        }
    }

    fn render(&self) -> String {
        match (self.line, self.column) {
            (Some(line), Some(column)) => format!("line {line}, column {column}: {}", self.message),
            (Some(line), None) => format!("line {line}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// serde_json appends " at line L column C"; we report those separately.
fn strip_position(message: &str) -> &str {
    message.rfind(" at line ").map_or(message, |i| &message[..i])
}

/// What a library said, shortened to [`MAX_MESSAGE_CHARS`] (arrow-json quotes the whole
/// record it could not take).
pub(crate) fn library_message(e: &arrow::error::ArrowError) -> String {
    use arrow::error::ArrowError;
    let message = match e {
        ArrowError::JsonError(m)
        | ArrowError::ParseError(m)
        | ArrowError::CastError(m)
        | ArrowError::CsvError(m) => m.as_str(),
        other => return truncate(&other.to_string()),
    };
    truncate(message)
}

/// `message`, cut to [`MAX_MESSAGE_CHARS`] characters with an ellipsis.
pub(crate) fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_where() {
        assert_eq!(DecodeError::at(Some(3), "bad").to_string(), "line 3: bad");
        assert_eq!(DecodeError::at(None, "bad").to_string(), "bad");
        let e = serde_json::from_str::<serde_json::Value>("{\n\"a\" 1}").unwrap_err();
        assert_eq!(
            DecodeError::syntax(e, 10).to_string(),
            "line 11, column 5: malformed JSON: expected `:`"
        );
        // Found by prop_json_decoders_never_panic_and_errors_say_where: "column 0".
        let e = serde_json::from_str::<serde_json::Value>("[\n").unwrap_err();
        assert_eq!(
            DecodeError::syntax(e, 1).to_string(),
            "line 2, column 1: malformed JSON: EOF while parsing a list"
        );
        let long = arrow::error::ArrowError::JsonError("é".repeat(1000));
        assert_eq!(library_message(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
