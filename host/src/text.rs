//! Guest text made safe to store and print. Strings a guest chooses (its
//! `describe()` name, version and description, its log lines) are data: printed
//! raw, an ESC sequence in them would drive the operator's terminal (clear it,
//! retitle it, fake output). The CLI prints guest text through [`escape`]; the
//! runtime strips such characters when it captures text through [`strip`].

use std::borrow::Cow;

/// Characters that must never reach a terminal as themselves: C0 and C1
/// controls and DEL (ESC, CSI, BEL, CR, ...), and the Unicode bidirectional
/// overrides and isolates, which reorder what the operator sees.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as a visible `\u{..}` escape (a
/// backslash is doubled, so the output cannot be mistaken for an escape the
/// guest wrote). Text without one is returned as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` without unsafe characters (tabs are kept) and cut to at most `max`
/// bytes on a character boundary, `…` marking a cut.
pub fn strip(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| *c == '\t' || !is_unsafe(*c))
        .collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_control_sequences_visible_and_inert() {
        assert_eq!(escape("plain text"), "plain text");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("t\u{9b}1m\u{7}\r"), "t\\u{9b}1m\\u{7}\\u{d}");
        assert_eq!(escape("rtl\u{202e}x"), "rtl\\u{202e}x");
        assert_eq!(escape("a\\u{1b}"), "a\\\\u{1b}");
        assert!(!escape("\u{1b}]0;title\u{7}").chars().any(is_unsafe));
    }

    #[test]
    fn strip_drops_controls_and_cuts_on_a_character_boundary() {
        assert_eq!(strip("a\u{1b}[31mb\rc\td", 100), "a[31mbc\td");
        assert_eq!(strip("ééé", 3), "é…");
    }
}
