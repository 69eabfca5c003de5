//! Text from the network is data: the one place it is made safe to print.
//!
//! A registry chooses its error messages, header values and JSON fields. Printed raw, an
//! escape sequence in them sets the terminal's title, clears the screen or colours what
//! follows, and an embedded newline forges a second `error:` line. Everything a registry (or
//! a server it sends us to) wrote passes through [`escape`] or [`quote`] before it reaches a
//! message.

use std::fmt::Write as _;

/// `s` with every control character (C0, DEL, C1), line and paragraph separator and
/// bidirectional-text control escaped as `\n`, `\t`, `\r`, `\x1b`, `\u{9b}`: printable, and
/// always one line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        push_escaped(&mut out, ch, false);
    }
    out
}

/// `s` in double quotes, escaped as [`escape`] does, with `"` and `\` escaped too, so where
/// the registry's words end is never in doubt.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        push_escaped(&mut out, ch, true);
    }
    out.push('"');
    out
}

fn push_escaped(out: &mut String, ch: char, quoted: bool) {
    match ch {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '"' | '\\' if quoted => {
            out.push('\\');
            out.push(ch);
        }
        c if (c as u32) < 0x20 || c == '\x7f' => {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_invisible_control(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// C1 controls (a lone U+009B is CSI on some terminals), line/paragraph separators, and the
/// bidirectional overrides and isolates that reorder what is shown.
fn is_invisible_control(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f | 0x2028 | 0x2029 | 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_text_is_printable_and_one_line() {
        let table = [
            (
                "manifest unknown",
                "manifest unknown",
                "\"manifest unknown\"",
            ),
            (
                "\x1b]0;pwned\x07\x1b[2J",
                "\\x1b]0;pwned\\x07\\x1b[2J",
                "\"\\x1b]0;pwned\\x07\\x1b[2J\"",
            ),
            (
                "bad\nerror: forged",
                "bad\\nerror: forged",
                "\"bad\\nerror: forged\"",
            ),
            ("a\"b\\c", "a\"b\\c", "\"a\\\"b\\\\c\""),
            (
                "\u{9b}31m\u{202e}txt",
                "\\u{9b}31m\\u{202e}txt",
                "\"\\u{9b}31m\\u{202e}txt\"",
            ),
            (
                "ümlaut ✓\r\t\x7f",
                "ümlaut ✓\\r\\t\\x7f",
                "\"ümlaut ✓\\r\\t\\x7f\"",
            ),
        ];
        for (input, escaped, quoted) in table {
            assert_eq!(escape(input), escaped, "{input:?}");
            assert_eq!(quote(input), quoted, "{input:?}");
            assert!(!quote(input).chars().any(char::is_control), "{input:?}");
        }
    }
}
