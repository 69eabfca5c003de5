//! Other programs: finding them on `PATH` and showing their command lines.

use std::path::PathBuf;

/// The first `program` on `PATH` that is a file, as a shell would find it.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A command line a POSIX shell reads back as the same words: plain words as they are,
/// the others in single quotes.
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_only_what_a_shell_would_split_or_expand() {
        let cases: &[(&[&str], &str)] = &[
            (&["kiwi-ng", "--type", "oem"], "kiwi-ng --type oem"),
            (&["a b"], "'a b'"),
            (&[""], "''"),
            (&["it's"], "'it'\\''s'"),
            (&["$HOME", "*"], "'$HOME' '*'"),
            (&["--target-dir=/t/x:1,2@+%"], "--target-dir=/t/x:1,2@+%"),
        ];
        for (words, want) in cases {
            let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
            assert_eq!(shell_words(&words), *want, "{words:?}");
        }
    }

    #[test]
    fn which_finds_a_program_on_path_and_not_a_missing_one() {
        assert!(which("sh").is_some_and(|p| p.ends_with("sh")));
        assert!(which("no-such-program-stackbuild-test").is_none());
    }
}
