//! What a message may quote of what a tenant wrote: every string a tenant
//! controls (a type, a key, a field path, an API server's message about
//! its object) is cut to a fixed length, with its size, before it reaches
//! a log line, an event, a status or an error. A million-character `type`
//! was written whole into a log line on every retry; a list of 4,096 key
//! names would be a megabyte.
//!
//! Control characters are escaped as Rust escapes them (`\n`), so that no
//! quoted string can forge a log line of its own.

use std::fmt;

/// How much of one tenant string (a type, a key) a message quotes.
pub const SHORT: usize = 128;

/// How much of a whole message (an error chain, an API server's answer)
/// a log line, an event or a status carries.
pub const MESSAGE: usize = 1024;

/// How many names of a list a message gives before `and N more`.
pub const NAMES: usize = 8;

/// `text`, escaped, and cut to at most `max` bytes with its size when
/// longer: `aaaa… (1000000 bytes)`.
pub fn quoted(text: &str, max: usize) -> Quoted<'_> {
    Quoted { text, max }
}

/// See [`quoted`].
#[derive(Clone, Copy, Debug)]
pub struct Quoted<'a> {
    text: &'a str,
    max: usize,
}

/// What the mark of a cut may take: `… (` and `)`, the size and ` bytes`.
const MARK: usize = 24;

fn escaped(c: char) -> String {
    if c.is_control() {
        c.escape_default().collect()
    } else {
        c.to_string()
    }
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole: usize = self.text.chars().map(|c| escaped(c).len()).sum();
        let room = if whole <= self.max {
            whole
        } else {
            self.max.saturating_sub(MARK)
        };
        let mut written = 0;
        for c in self.text.chars() {
            let e = escaped(c);
            if written + e.len() > room {
                break;
            }
            written += e.len();
            f.write_str(&e)?;
        }
        if whole > self.max {
            write!(f, "… ({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

/// `text` as [`quoted`] makes it, owned.
pub fn cut(text: &str, max: usize) -> String {
    quoted(text, max).to_string()
}

/// The first [`NAMES`] of `names`, each [`quoted`] to [`SHORT`], joined
/// with `, `, then `and N more` if there were more.
pub fn names<I, S>(names: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = Vec::new();
    let mut more = 0usize;
    for n in names {
        if out.len() < NAMES {
            out.push(quoted(n.as_ref(), SHORT).to_string());
        } else {
            more += 1;
        }
    }
    let mut text = out.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_string_is_cut_with_its_size_and_a_short_one_is_whole() {
        let huge = "t".repeat(1_000_000);
        let q = quoted(&huge, SHORT).to_string();
        assert!(q.len() <= SHORT, "{}", q.len());
        assert!(q.ends_with("… (1000000 bytes)"), "{q}");
        assert_eq!(
            quoted("kubernetes.io/tls", SHORT).to_string(),
            "kubernetes.io/tls"
        );
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let q = quoted("Opaque\nlevel=ERROR forged", SHORT).to_string();
        assert!(!q.contains('\n'), "{q}");
        assert!(q.contains("\\n"), "{q}");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let q = cut(&"\u{1D11E}".repeat(100), 40);
        assert!(
            q.starts_with("\u{1D11E}\u{1D11E}\u{1D11E}\u{1D11E}…"),
            "{q}"
        );
        assert!(q.len() <= 40, "{}", q.len());
    }

    #[test]
    fn a_list_names_the_first_few_and_counts_the_rest() {
        let keys: Vec<String> = (0..4096).map(|i| format!("{i:0>253}")).collect();
        let text = names(&keys);
        assert!(
            text.ends_with(" and 4088 more"),
            "{}",
            &text[text.len() - 30..]
        );
        assert!(text.len() < NAMES * (SHORT + 2) + 20, "{}", text.len());
        assert_eq!(names(["a", "b"]), "a, b");
    }
}
