//! Text from outside (a token's claims, a server's error message) made inert before it
//! reaches a terminal: control characters could move the cursor, clear the screen or retitle
//! the window (ESC and C1 sequences), and bidirectional-text controls could make one name read
//! as another.

use gatehouse_client::is_bidi_control;
use std::fmt::Write as _;

fn dangerous(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// `text` with every control and bidi character written as `\u{..}`, newlines included (one
/// message is one line).
pub fn escape_controls(text: &str) -> String {
    escape(text, false)
}

/// [`escape_controls`], but newlines kept: for multi-line messages of our own (a config
/// file's parse error) that may quote outside text.
pub fn escape_controls_keep_lines(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if dangerous(c) && !(keep_lines && c == '\n') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// serde_json output with the characters it leaves raw inside strings (DEL, the C1 controls,
/// bidi controls) written as `\uXXXX`: the same JSON document, inert on a terminal.
pub fn json_for_terminal(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        // Outside strings serde_json writes only ASCII punctuation, letters, digits, spaces
        // and (pretty) newlines, so any other control is inside a string, where an escape
        // means the same character. All of them are below U+FFFF: four digits suffice.
        if dangerous(c) && c != '\n' {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_their_escape_sequences() {
        let text = "refused: \u{1b}]0;owned\u{7}\u{1b}[2J \u{9b}2J admin\u{202e}fdp.exe\r\nforged";
        let shown = escape_controls(text);
        assert!(!shown.chars().any(dangerous), "{shown:?}");
        assert_eq!(
            shown,
            r"refused: \u{1b}]0;owned\u{7}\u{1b}[2J \u{9b}2J admin\u{202e}fdp.exe\u{d}\u{a}forged"
        );
        assert_eq!(escape_controls("plain text é"), "plain text é");
        assert_eq!(
            escape_controls_keep_lines("line 1\nline\u{1b}2"),
            "line 1\nline\\u{1b}2"
        );
    }

    #[test]
    fn json_stays_the_same_document_but_inert() {
        let claims = serde_json::json!({
            "email": "admin\u{202e}moc.elgoog@evil.example",
            "name": "\u{9b}2J\u{7f}\u{1b}[31m\u{2066}x\u{2069}",
        });
        let pretty = serde_json::to_string_pretty(&claims).unwrap();
        let shown = json_for_terminal(&pretty);
        assert!(
            !shown.chars().any(|c| dangerous(c) && c != '\n'),
            "{shown:?}"
        );
        assert!(shown.contains(r"admin\u202emoc"), "{shown}");
        assert!(
            shown.contains(r"\u009b2J\u007f\u001b[31m\u2066x\u2069"),
            "{shown}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(parsed, claims);
        assert_eq!(shown.lines().count(), pretty.lines().count());
    }
}
