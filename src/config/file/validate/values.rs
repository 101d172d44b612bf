//! How one value of the file is read: parsed by its flag's parser, and refused with the line and the
//! key it came from.

use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::super::raw::Quantity;
use super::super::{render, FileError};
use super::Reader;
use crate::config;
use crate::config::admin::AdminAddr;

impl Reader<'_> {
    pub(super) fn duration(
        &self,
        key: &str,
        raw: Option<&Spanned<Quantity>>,
    ) -> Result<Option<Duration>, FileError> {
        raw.map(|text| self.duration_value(key, text)).transpose()
    }

    pub(super) fn timeout(
        &self,
        key: &str,
        raw: Option<&Spanned<Quantity>>,
    ) -> Result<Option<Duration>, FileError> {
        raw.map(|text| self.check(key, text, config::parse_timeout))
            .transpose()
    }

    pub(super) fn duration_value(
        &self,
        key: &str,
        raw: &Spanned<Quantity>,
    ) -> Result<Duration, FileError> {
        self.check(key, raw, config::parse_duration)
    }

    pub(super) fn addr(&self, key: &str, raw: &Spanned<String>) -> Result<SocketAddr, FileError> {
        raw.get_ref().parse().map_err(|_| {
            self.error(
                key,
                raw.span(),
                &format!("invalid address '{}': expected IP:PORT", raw.get_ref()),
            )
        })
    }

    /// The top-level `admin` address (the `--admin` syntax).
    pub(super) fn admin(&self, raw: &Spanned<String>) -> Result<AdminAddr, FileError> {
        raw.get_ref()
            .parse()
            .map_err(|message: String| self.error("admin", raw.span(), &message))
    }

    pub(super) fn positive(&self, key: &str, raw: &Spanned<u32>) -> Result<u32, FileError> {
        match *raw.get_ref() {
            0 => Err(self.error(key, raw.span(), "must be at least 1")),
            n => Ok(n),
        }
    }

    /// Every string of a list parsed as a `T` (an allow rule, a TLV name); the first bad one refuses it.
    pub(super) fn each<T, C>(&self, key: &str, raw: &Spanned<Vec<String>>) -> Result<C, FileError>
    where
        T: FromStr<Err = String>,
        C: FromIterator<T>,
    {
        raw.get_ref()
            .iter()
            .map(|text| text.parse())
            .collect::<Result<C, String>>()
            .map_err(|err| self.error(key, raw.span(), &err))
    }

    /// `raw` parsed by `parse`, the flag's parser; a string or a [`Quantity`].
    pub(super) fn check<T, S: AsRef<str>>(
        &self,
        key: &str,
        raw: &Spanned<S>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, FileError> {
        parse(raw.get_ref().as_ref()).map_err(|err| self.error(key, raw.span(), &err))
    }

    pub(super) fn error(&self, key: &str, span: Range<usize>, message: &str) -> FileError {
        render::refused(self.label, self.text, span.start, key, message)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::file::tests::{accepts, rejects, ROUTE};
    use std::time::Duration;

    #[test]
    fn test_bad_duration_names_line_and_key() {
        rejects(
            &format!("{ROUTE}\nconnect_timeout = \"5parsecs\"\n"),
            "test.toml:5: route[0].connect_timeout: invalid duration '5parsecs'",
            &[],
        );
    }

    /// A TOML integer is what a bare number is to the flag: seconds for a duration (global or per
    /// route), bytes for a size; a zero timeout, a negative number or a float is still refused.
    #[test]
    fn test_integer_durations_and_sizes() {
        let config = accepts(&format!(
            "shutdown_timeout = 7\n{ROUTE}\nconnect_timeout = 5\nidle_timeout = 600\nkeepalive = 60\nbuffer_size = 16384\n"
        ));
        let route = &config.routes[0];
        assert_eq!(config.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(route.connect_timeout, Duration::from_secs(5));
        assert_eq!(route.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(route.keepalive, Some(Duration::from_secs(60)));
        assert_eq!(route.buffer_size, 16384);
        rejects(
            &format!("{ROUTE}\nconnect_timeout = 0\n"),
            "test.toml:5: route[0].connect_timeout: invalid timeout '0'",
            &["more than zero"],
        );
        for (bad, shown) in [("-5", "-5"), ("1.5", "1.5"), ("true", "true")] {
            rejects(
                &format!("{ROUTE}\nconnect_timeout = {bad}\n"),
                "test.toml:5: route[0].connect_timeout:",
                &[shown, "a whole number (seconds for a duration"],
            );
        }
    }
}
