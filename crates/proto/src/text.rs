//! Text from outside (a remote host the client chose, a label, a user name, a line of a
//! PAM file) shown to people. A terminal obeys escape sequences, and bidirectional or
//! invisible characters make one string look like another: a remote host that clears
//! the screen or rewrites earlier lines must show as what it is. JSON output needs none
//! of this: its encoder escapes control characters and it stays exact.

use std::borrow::Cow;
use std::fmt::Write;

/// Characters that move, hide or reorder text without being control characters:
/// bidirectional marks, embeddings, overrides and isolates, and zero-width ones.
fn is_deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// `text` as a terminal may show it: control characters (C0, DEL, C1) and deceptive ones
/// escaped as `\x1b` or `\u{202e}`, and a backslash doubled so that an escape cannot be
/// forged by typing one. Everything else, letters of every script included, unchanged.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c == '\\' || c.is_control() || is_deceptive(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() || is_deceptive(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Several lines of such text: each escaped as [`for_terminal`], the line breaks kept.
pub fn lines_for_terminal(text: &str) -> String {
    text.split('\n')
        .map(for_terminal)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        for s in [
            "alice",
            "203.0.113.9",
            "2001:db8::1",
            "Téléphone de Zoë",
            "手机",
            "",
        ] {
            assert!(matches!(for_terminal(s), Cow::Borrowed(t) if t == s));
        }
    }

    #[test]
    fn controls_and_deceptive_characters_are_escaped() {
        assert_eq!(for_terminal("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(for_terminal("x\ry\nz\t\x7f"), "x\\x0dy\\x0az\\x09\\x7f");
        assert_eq!(for_terminal("\u{9b}31m"), "\\u{009b}31m");
        assert_eq!(for_terminal("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(for_terminal("zero\u{200b}width"), "zero\\u{200b}width");
        // A typed backslash cannot pass for an escape.
        assert_eq!(for_terminal("\\x1b"), "\\\\x1b");
        assert_eq!(lines_for_terminal("a\x1bc\nb\r\n"), "a\\x1bc\nb\\x0d\n");
    }

    #[test]
    fn nothing_dangerous_survives() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let shown = for_terminal(&c.to_string()).into_owned();
            assert!(
                !shown.chars().any(|d| d.is_control() || is_deceptive(d)),
                "{c:?} shown as {shown:?}"
            );
        }
    }
}
