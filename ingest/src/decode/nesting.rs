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
///
/// Strings are skipped with `memchr` (to the next `"` or `\\`): in bodies of events nearly
/// every byte is inside a string, so this runs at memory speed rather than a byte at a time.
pub fn check(text: &[u8]) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(k) = text.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        // An unterminated string: the parser says so.
                        return Ok(());
                    };
                    if text[i + k] == b'\\' {
                        i += k + 2; // the escape and the byte it escapes
                    } else {
                        i += k + 1;
                        break;
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(position(text, i));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The line and column of byte `at`.
fn position(text: &[u8], at: usize) -> TooDeep {
    let before = &text[..at];
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |n| n + 1);
    TooDeep { line, column: at - line_start + 1 }
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

    /// The byte-at-a-time walk `check` replaced: the same answers on any text.
    fn reference(text: &[u8]) -> Result<(), TooDeep> {
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

    #[test]
    fn answers_as_the_byte_walk_does() {
        let alphabet = b"[[[{{{]}\"\\\na ";
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut deep = 0;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 400) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    alphabet[(rng % alphabet.len() as u64) as usize]
                })
                .collect();
            let expected = reference(&text);
            deep += usize::from(expected.is_err());
            assert_eq!(check(&text), expected, "{:?}", String::from_utf8_lossy(&text));
        }
        assert!(deep > 100, "the texts must reach the limit often enough: {deep}");
    }
}
