//! How the sink quotes a value it did not write itself — a message's field,
//! a header, a database's error text — in a log line, a `dlq.reason` or
//! `/status`: cut to [`MAX_QUOTED_CHARS`] characters on a character
//! boundary, with the original length after the cut, so that a payload
//! never travels whole in a reason (a 1 MB field would otherwise be one
//! log line and one header of a dead letter).

use std::borrow::Cow;
use std::fmt::Write as _;

/// The characters of a value quoted at most.
pub const MAX_QUOTED_CHARS: usize = 200;

/// The characters of a whole reason at most: a reason quotes a few values
/// and names a few columns, each bounded.
pub const MAX_REASON_CHARS: usize = 1_000;

/// `text` as a string literal (`"…"`, escapes shown), cut.
pub fn quoted(text: &str) -> String {
    match cut_at(text, MAX_QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some(cut) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// `text` as it is (a numeral, a JSON fragment, a library's message), cut.
pub fn capped(text: &str) -> Cow<'_, str> {
    cut(text, MAX_QUOTED_CHARS)
}

/// A whole reason, cut at [`MAX_REASON_CHARS`].
pub fn reason(text: String) -> String {
    match cut(&text, MAX_REASON_CHARS) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match cut_at(text, max) {
        None => Cow::Borrowed(text),
        Some(cut) => {
            let mut out = String::with_capacity(cut + 24);
            out.push_str(&text[..cut]);
            let _ = write!(out, "… ({} bytes)", text.len());
            Cow::Owned(out)
        }
    }
}

/// The byte index after the first `max` characters, when there are more.
fn cut_at(text: &str, max: usize) -> Option<usize> {
    if text.len() <= max {
        return None;
    }
    text.char_indices().nth(max).map(|(at, _)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quoted("1m"), "\"1m\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        assert_eq!(capped("12.5"), "12.5");
        let exact = "x".repeat(MAX_QUOTED_CHARS);
        assert_eq!(capped(&exact), exact.as_str());
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary_with_their_length() {
        let long = "é".repeat(500_000);
        let q = quoted(&long);
        assert_eq!(
            q,
            format!("\"{}\"… (1000000 bytes)", "é".repeat(MAX_QUOTED_CHARS))
        );
        let c = capped(&long);
        assert!(c.starts_with(&"é".repeat(MAX_QUOTED_CHARS)));
        assert!(c.ends_with("… (1000000 bytes)"));
        assert_eq!(c.chars().count(), MAX_QUOTED_CHARS + 17);
        let r = reason("a".repeat(2_000));
        assert_eq!(r.chars().count(), MAX_REASON_CHARS + 14);
    }
}
