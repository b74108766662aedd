//! The nesting limit: how deep arrays and objects may sit inside each other in what Tarn reads.
//!
//! Several readers of JSON recurse once per level (serde_json's `Value` and its drop, arrow-json's
//! tape printer, schema inference, the `json` columns' re-encoding). A body of 200,000 `[`
//! recurses 200,000 times and overflows the stack of the thread that reads it, which aborts the
//! whole server. [`check`] walks the bytes once, without recursion, before any of them runs,
//! and refuses text nested deeper than [`MAX_NESTING`] with the line and column of the first
//! bracket too many.
//!
//! The walk tells strings apart the way every JSON parser does (`"` opens and closes, `\`
//! escapes the next byte), so brackets inside strings are text, not nesting. It does not
//! validate: malformed text is left to the parser, which says what is wrong with it.

/// The deepest nesting of arrays and objects Tarn reads; a body's outer array is one level.
pub const MAX_NESTING: usize = 64;

/// Where text nests too deep: 1-based line and column (in bytes, as serde_json counts them)
/// of the bracket that opens level [`MAX_NESTING`] + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in bytes from the start of the line.
    pub column: usize,
}

impl TooDeep {
    /// What is wrong, without the position.
    pub fn reason() -> String {
        format!(
            "nested deeper than {MAX_NESTING} levels (arrays and objects inside each other); \
             Tarn reads at most {MAX_NESTING}"
        )
    }
}

/// Refuses JSON text (a body, a record or a value) nested deeper than [`MAX_NESTING`].
pub fn check(text: &[u8]) -> Result<(), TooDeep> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let (mut line, mut line_start) = (1usize, 0usize);
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(TooDeep { line, column: i - line_start + 1 });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_levels_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check(deep(MAX_NESTING).as_bytes()), Ok(()));
        assert_eq!(
            check(deep(MAX_NESTING + 1).as_bytes()),
            Err(TooDeep { line: 1, column: MAX_NESTING + 1 })
        );
        // Siblings do not add up; brackets in strings (escaped quotes too) are text.
        let siblings = "[1],".repeat(1000);
        assert_eq!(check(format!("[{siblings}[]]").as_bytes()), Ok(()));
        let text = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert_eq!(check(text.as_bytes()), Ok(()));
        // Objects count as arrays do; lines and columns are where the bracket is.
        let objects = format!("\n\n  {}", "{\"a\":".repeat(70));
        assert_eq!(check(objects.as_bytes()), Err(TooDeep { line: 3, column: 3 + 5 * 64 }));
    }
}
