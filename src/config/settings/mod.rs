//! Every route setting, declared once: its TOML key, its flag, its default as the docs give it, what a
//! reload does when it changes, its doc line, how the start line shows it, and an example value.
//!
//! A route setting used to be written in five places that nothing tied together (the flag in `main.rs`,
//! the field in [`crate::config`], the key in [`crate::config::file`], the reload comparison, docs/config.md),
//! and they drifted. [`ROUTE`] is now the one list. What is derived from it:
//! - the flags `--config` excludes ([`flag_ids`]);
//! - the flags' defaults, where the default is one value ([`Setting::flag_default`]; the file's typed
//!   defaults in [`crate::config`] are held to the same values by a test);
//! - the start line's settings ([`start_line`]);
//! - the key table of docs/config.md ([`docs_table`]; tests/config.rs fails when the file differs).
//!
//! What is checked against it, by tests that fail when they drift: every setting with a flag is accepted
//! by the flags and by the file with the same value and the same default, and its change is seen by the
//! reload comparison (`src/main/flags.rs`); every flag of the binary is a route setting here or a global
//! one (`src/main/flags.rs`); the README's flag table has a row for every flag (here). The parsing stays
//! typed where clap and serde do it well; this table holds what was repeated by hand around them.
//!
//! Adding a route setting: a `const` in `table.rs` and its place in [`ROUTE`], a field in
//! [`crate::config::RouteConfig`], the flag in `main.rs` (its default from the `const`) and its reading in
//! `src/main/flags.rs`, the key in [`crate::config::file`], and its use; the tests then say what else is
//! missing (docs, README).

mod table;

pub use table::*;

use std::time::Duration;

use crate::config::RouteConfig;

/// What a reload does to a running route when this setting changes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReload {
    /// The setting is how a reload recognises the route (by `name`, or by `listen` when unnamed).
    Matches,
    /// The route is replaced: a new one with the new value takes over its listeners, and the old one
    /// drains with the value its connections started with.
    Replaces,
}

impl OnReload {
    fn as_str(self) -> &'static str {
        match self {
            OnReload::Matches => "matches",
            OnReload::Replaces => "replaces",
        }
    }
}

/// Which minimal route an [`Example`] is added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `--listen` and two `--upstream`s (so that `connect_attempts` has room below its default).
    Forward,
    /// `--listen`, `--mode connect` and one `--allow`.
    Connect,
    /// `--listen udp://` and two `--upstream udp://`s.
    Udp,
}

/// A value other than the default, written both ways: tests check that the flags and the file give the
/// same route, and that it differs from the base route.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    pub base: Base,
    /// The flags (with their values) added to the base route's.
    pub flags: &'static [&'static str],
    /// The lines added to the base route's `[[route]]` table.
    pub toml: &'static str,
}

/// One route setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The TOML key in a `[[route]]` table (also the start line's label, with `-` for `_`).
    pub key: &'static str,
    /// The clap id of its flag (`--` and the id with `-` for `_`); `None` when only the file has it.
    flag: Option<&'static str>,
    /// The flag's value name (empty for a switch).
    value: &'static str,
    /// The default, as docs/config.md gives it (Markdown). A single backquoted literal (`` `"5s"` ``) is
    /// TOML, and a test checks it against the real default.
    pub default: &'static str,
    pub on_reload: OnReload,
    /// The meaning column of docs/config.md (Markdown, one line).
    doc: &'static str,
    /// Its value on the start line; `None` leaves it out (the default of a setting that is usually off,
    /// or one the line shows otherwise).
    show: fn(&RouteConfig) -> Option<String>,
    /// `None` for the settings the base routes themselves exercise, and `name` (the file's only).
    pub example: Option<Example>,
}

impl Setting {
    /// `--flag VALUE` as the docs write it.
    fn usage(&self) -> Option<String> {
        self.flag.map(|id| {
            let flag = format!("--{}", id.replace('_', "-"));
            match self.value {
                "" => flag,
                value => format!("{flag} {value}"),
            }
        })
    }

    /// The flag's default, for clap: the documented default when it is one TOML literal (`` `"5s"` ``
    /// gives `5s`), else empty (the flag is optional, and `src/main/flags.rs` fills in what a missing one
    /// means).
    pub fn flag_default(&self) -> &'static str {
        self.default
            .strip_prefix('`')
            .and_then(|rest| rest.strip_suffix('`'))
            .filter(|inner| !inner.contains('`'))
            .map_or("", |literal| literal.trim_matches('"'))
    }

    fn label(&self) -> String {
        self.key.replace('_', "-")
    }
}

fn hidden(_: &RouteConfig) -> Option<String> {
    None
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn millis_or_off(duration: Option<Duration>) -> Option<String> {
    Some(duration.map_or_else(|| "off".to_string(), millis))
}

/// The clap ids of every route setting's flag: what `--config` excludes.
pub fn flag_ids() -> Vec<&'static str> {
    ROUTE.iter().filter_map(|setting| setting.flag).collect()
}

/// The settings part of a route's start line: ` label=value` for each setting it shows.
pub(crate) fn start_line(config: &RouteConfig) -> String {
    ROUTE
        .iter()
        .filter_map(|setting| {
            (setting.show)(config).map(|value| format!(" {}={value}", setting.label()))
        })
        .collect()
}

/// The key table of docs/config.md (tests/config.rs fails when the file differs).
pub fn docs_table() -> String {
    let mut out =
        String::from("| key | flag | default | on reload | meaning |\n|---|---|---|---|---|\n");
    for setting in ROUTE {
        let flag = setting
            .usage()
            .map_or_else(|| "none".to_string(), |usage| format!("`{usage}`"));
        out.push_str(&format!(
            "| `{}` | {flag} | {} | {} | {} |\n",
            setting.key,
            setting.default,
            setting.on_reload.as_str(),
            setting.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flag the README's flag table does not list would be a flag nobody finds.
    #[test]
    fn test_readme_lists_every_flag() {
        let readme = include_str!("../../../README.md");
        for usage in ROUTE.iter().filter_map(Setting::usage) {
            assert!(
                readme.contains(&format!("| `{usage}` |")),
                "README.md's flag table has no row for `{usage}`"
            );
        }
    }

    /// The start line shows a setting that is usually off only when it is on.
    #[test]
    fn test_start_line_shows_what_is_set() {
        let route = crate::config::file::test_route;
        let plain = start_line(&route(""));
        assert!(
            plain.starts_with(" balance=round-robin buffer-size=65536 "),
            "{plain}"
        );
        assert!(!plain.contains("max-connection-duration"), "{plain}");
        let limited = start_line(&route("max_connection_duration = \"90s\"\n"));
        assert!(
            limited.contains(" max-connection-duration=90000ms "),
            "{limited}"
        );
    }

    #[test]
    fn test_keys_and_flags_are_unique() {
        for (index, setting) in ROUTE.iter().enumerate() {
            for other in &ROUTE[index + 1..] {
                assert_ne!(setting.key, other.key);
                assert!(setting.flag.is_none() || setting.flag != other.flag);
            }
        }
    }
}
