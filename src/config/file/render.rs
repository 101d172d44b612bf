//! Error lines: `FILE:LINE: KEY: message`, one line, because an operator reloading a file with SIGHUP
//! only ever sees one log line.
//!
//! A value the validation refuses comes with its span ([`super::validate`] reads it `Spanned`); an error
//! of the TOML parser itself carries a byte span only, from which [`locate`] recovers the line and, as
//! well as the text allows, the key.

use super::FileError;

/// An error of the TOML parser (bad syntax, unknown key, wrong type, unknown variant).
pub(super) fn parser_error(label: &str, text: &str, err: &toml::de::Error) -> FileError {
    let (line, key) = err
        .span()
        .map_or((None, None), |span| locate(text, span.start));
    FileError::Invalid(format_error(label, line, key.as_deref(), err.message()))
}

/// A value the validation refuses: `key`'s value starts at byte `offset` of `text`.
pub(super) fn refused(
    label: &str,
    text: &str,
    offset: usize,
    key: &str,
    message: &str,
) -> FileError {
    let line = line_of(text, offset);
    FileError::Invalid(format_error(label, Some(line), Some(key), message))
}

/// A rule across the file, with no one line to point at (no route, two routes of one name).
pub(super) fn rejected(label: &str, key: Option<&str>, message: &str) -> FileError {
    FileError::Invalid(format_error(label, None, key, message))
}

fn format_error(label: &str, line: Option<usize>, key: Option<&str>, message: &str) -> String {
    let mut out = label.to_string();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    if let Some(key) = key {
        out.push_str(&format!(": {key}"));
    }
    format!("{out}: {}", message.trim().replace('\n', " "))
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    1 + text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The line of a parser error and, as well as the text allows, the key it is about: `route[N].key` where
/// N counts the `[[route]]` headers before it. The parser's span points into the value or at the key, so
/// the key is the nearest `key =` at or above the error that is not behind a table header.
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let line = line_of(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let upto = &lines[..line.min(lines.len())];
    let routes = upto
        .iter()
        .filter(|l| l.trim_start().starts_with("[[route]]"))
        .count();
    let field = upto
        .iter()
        .rev()
        .map(|l| l.trim_start())
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (key, _) = l.split_once('=')?;
            let key = key.trim();
            (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| key.to_string())
        });
    let key = match (routes, field) {
        (0, field) => field,
        (n, Some(field)) => Some(format!("route[{}].{field}", n - 1)),
        (n, None) => Some(format!("route[{}]", n - 1)),
    };
    (Some(line), key)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{rejects, ROUTE};

    #[test]
    fn test_unknown_variant_names_line_and_key() {
        rejects(
            &format!("{ROUTE}\n{ROUTE}balance = \"round-robbin\"\n"),
            "test.toml:8: route[1].balance: unknown variant `round-robbin`",
            &["least-conn"],
        );
    }

    #[test]
    fn test_unknown_key_names_line_and_key() {
        rejects(
            &format!("{ROUTE}balnce = \"x\"\n"),
            "test.toml:4: route[0].balnce: unknown field",
            &[],
        );
    }

    #[test]
    fn test_misspelled_upstream_table_key_says_what_an_upstream_is() {
        rejects(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [{ adr = \"10.0.0.1:80\" }]\n",
            "test.toml:3: route[0].upstreams: ",
            &["addr = \"HOST:PORT\""],
        );
    }

    #[test]
    fn test_global_key_error_has_no_route_prefix() {
        rejects(
            &format!("stats_interval = \"often\"\n{ROUTE}"),
            "test.toml:1: stats_interval: invalid duration",
            &[],
        );
    }
}
