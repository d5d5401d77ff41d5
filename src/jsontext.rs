//! Positions in JSON text, for one-line error messages that name the line: serde_json's
//! `Value` keeps no positions, so keys are found again in the text (used by `config::settings`
//! and `userdb`).

/// serde_json's message without its " at line L column C" tail (callers report the position).
pub fn json_error_text(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&tail).unwrap_or(&full).to_string()
}

/// serde_json says column 0 when it failed just after reading a newline; point at the end
/// of the previous line instead, where the mistake is.
pub fn error_position(text: &str, line: usize, column: usize) -> (usize, usize) {
    if column > 0 || line < 2 {
        return (line, column);
    }
    let previous = text.split('\n').nth(line - 2).unwrap_or("");
    (line - 1, previous.trim_end_matches('\r').chars().count())
}

/// The keys of the top-level object of (valid) JSON `text`, in order, with their 1-based line.
/// serde_json does not keep positions, and config errors must say the line (STYLE habit 6).
pub fn top_level_key_lines(text: &str) -> Vec<(String, usize)> {
    let bytes = text.as_bytes();
    let mut keys = Vec::new();
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let Some(end) = string_end(bytes, i) else {
                    break;
                };
                if depth == 1 && next_non_space(bytes, end + 1) == Some(b':') {
                    // The slice is a complete JSON string literal: quotes are ASCII boundaries.
                    if let Ok(key) = serde_json::from_str::<String>(&text[i..=end]) {
                        keys.push((key, line));
                    }
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// Index of the quote closing the string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn next_non_space(bytes: &[u8], from: usize) -> Option<u8> {
    bytes
        .get(from..)?
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

/// The first key that appeared before, with the line of its second appearance.
pub fn first_duplicate(lines: &[(String, usize)]) -> Option<(String, usize)> {
    lines.iter().enumerate().find_map(|(i, (key, line))| {
        lines[..i]
            .iter()
            .any(|(k, _)| k == key)
            .then(|| (key.clone(), *line))
    })
}

// ---- value validators: each returns the problem, without the key ----
