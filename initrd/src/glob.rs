//! Shell-style wildcard matching (`*`, `?`, `[...]`), as used by `ld.so.conf` include lines and
//! `modules.alias` patterns. No `/` special-casing: callers match one path component at a time.

/// True when `text` matches the wildcard `pattern`.
///
/// Supports `*` (any run), `?` (one character), `[abc]`, `[a-z]`, `[!a]`/`[^a]` and `\` escapes.
/// An unterminated `[` matches a literal `[`. Runs in O(len(pattern) × len(text)) without
/// recursion, so hostile patterns cannot blow the stack or take exponential time.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the most recent `*`: (pattern index after it, text index it covers to).
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => match match_class(&pattern[p..], text[t]) {
                Some((true, length)) => Some(length),
                Some((false, _)) => None,
                None => (text[t] == '[').then_some(1),
            },
            Some('\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(2),
            Some(&c) => (c == text[t]).then_some(1),
            None => None,
        };
        match step {
            Some(length) => {
                p += length;
                t += 1;
            }
            None => match backtrack {
                Some((after_star, covered)) => {
                    p = after_star;
                    t = covered + 1;
                    backtrack = Some((after_star, covered + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `class[0] == '['`. Returns whether it matched and
/// the pattern length of the class, or `None` if the class is not terminated.
fn match_class(class: &[char], c: char) -> Option<(bool, usize)> {
    let mut index = 1;
    let negated = matches!(class.get(index), Some('!') | Some('^'));
    if negated {
        index += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let current = *class.get(index)?;
        if current == ']' && !first {
            return Some((matched != negated, index + 1));
        }
        first = false;
        if class.get(index + 1) == Some(&'-') && class.get(index + 2).is_some_and(|&e| e != ']') {
            let end = class[index + 2];
            if current <= c && c <= end {
                matched = true;
            }
            index += 3;
        } else {
            if current == c {
                matched = true;
            }
            index += 1;
        }
    }
}

/// True when `pattern` contains a wildcard character.
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_star_question() {
        assert!(wildcard_match("abc", "abc"));
        assert!(!wildcard_match("abc", "abd"));
        assert!(wildcard_match("*.conf", "libc.conf"));
        assert!(!wildcard_match("*.conf", "libc.conf.bak"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("?", ""));
    }

    #[test]
    fn modalias_patterns() {
        let pattern = "virtio:d00000001v*";
        assert!(wildcard_match(pattern, "virtio:d00000001v00001AF4"));
        assert!(!wildcard_match(pattern, "virtio:d00000002v00001AF4"));
        assert!(wildcard_match(
            "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(wildcard_match("[a-c]x", "bx"));
        assert!(!wildcard_match("[!a-c]x", "bx"));
        assert!(wildcard_match("[^a-c]x", "dx"));
        assert!(wildcard_match("[]]", "]"));
        assert!(wildcard_match("[a", "[a"), "unterminated class is literal");
        assert!(wildcard_match("\\*", "*"));
        assert!(!wildcard_match("\\*", "x"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let pattern = "*a".repeat(50) + "b";
        let text = "a".repeat(5000);
        assert!(!wildcard_match(&pattern, &text));
    }
}
