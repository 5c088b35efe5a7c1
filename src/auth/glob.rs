//! Shell-style globs: stream patterns in `[[auth.streams]]` and JWT `streams` claims, and the
//! interface names of `media.interfaces`.

/// Whether stream `name` matches glob `pattern` (`*`: any run, `?`: one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        for (p, n, m) in [
            ("class-*", "class-1", true),
            ("class-*", "class-", true),
            ("class-*", "clas-1", false),
            ("class-?", "class-1", true),
            ("class-?", "class-12", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*.live", "event.live", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("Exact", "exact", false),
        ] {
            assert_eq!(glob_match(p, n), m, "{p:?} vs {n:?}");
        }
    }
}
