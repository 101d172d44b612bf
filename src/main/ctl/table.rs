//! Aligned text tables and the human forms of figures (`64.0K`, `12.4s`), shared by `ctl`'s answers
//! and `ctl top`'s frames. Pure: text in, text out.
//!
//! A column is as wide as its widest cell; numbers align right so their digits line up, words left.
//! Cells read from JSON go through [`cell`], so a field the server leaves out or sets to `null` shows
//! as `-` rather than failing the whole table: the server may be newer or older than this client.

use serde_json::Value;

/// Which side of its column a cell keeps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table being filled: its headers, then rows of as many cells.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// One row; missing cells are blank, extra ones dropped.
    pub(crate) fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The headers and rows, columns two spaces apart, each line without trailing blanks.
    pub(crate) fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows
                    .iter()
                    .map(|row| row[i].chars().count())
                    .fold(header.len(), usize::max)
            })
            .collect();
        let mut out = String::new();
        let headers: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        for cells in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A byte count as people read it: `512`, `64.0K`, `1.5M`, `2.0G` (binary multiples, one decimal).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return n.to_string();
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // Round first, so 1023.96K shows as 1.0M, never 1024.0K.
    while (value * 10.0).round() / 10.0 >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// A span of milliseconds: `350ms`, `12.4s`, `3m05s`, `2h07m`, `3d04h`.
pub(crate) fn age(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return String::from("-");
    }
    if ms < 1_000.0 {
        return format!("{}ms", ms.round() as u64);
    }
    // Truncated, so a pair shown at 59.96 s reads 59.9s, not 60.0s, and then 1m00s.
    let tenths = (ms / 100.0) as u64;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = tenths / 10;
    match secs {
        s if s < 3_600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// A rate in bytes per second, `-` when there is none yet (the first frame of `ctl top`).
pub(crate) fn rate(per_second: Option<f64>) -> String {
    match per_second {
        Some(r) if r.is_finite() && r >= 0.0 => format!("{}/s", bytes(r.round() as u64)),
        _ => String::from("-"),
    }
}

/// A JSON field as a cell: a string as it is, a number or a boolean as written, `-` for null or
/// absent, anything else (a list) as JSON text.
pub(crate) fn cell(object: &Value, key: &str) -> String {
    match object.get(key) {
        None | Some(Value::Null) => String::from("-"),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// A byte-count field as a cell (`64.0K`), `-` if absent.
pub(crate) fn bytes_cell(object: &Value, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_u64)
        .map_or_else(|| String::from("-"), bytes)
}

/// A millisecond field as a cell (`12.4s`), `-` if absent.
pub(crate) fn age_cell(object: &Value, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_f64)
        .map_or_else(|| String::from("-"), age)
}

/// A number field, 0 if absent.
pub(crate) fn number(object: &Value, key: &str) -> u64 {
    object.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A boolean field, false if absent.
pub(crate) fn flag(object: &Value, key: &str) -> bool {
    object.get(key).and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bytes() {
        let cases = [
            (0, "0"),
            (1023, "1023"),
            (1024, "1.0K"),
            (65_536, "64.0K"),
            (1_536 * 1024, "1.5M"),
            (1024 * 1024 - 20, "1.0M"),
            (3 << 30, "3.0G"),
            (5 << 40, "5.0T"),
        ];
        for (n, shown) in cases {
            assert_eq!(bytes(n), shown, "{n}");
        }
    }

    #[test]
    fn test_age() {
        let cases = [
            (0.0, "0ms"),
            (3.4, "3ms"),
            (999.4, "999ms"),
            (1_000.0, "1.0s"),
            (12_403.0, "12.4s"),
            (59_999.0, "59.9s"),
            (60_000.0, "1m00s"),
            (185_000.0, "3m05s"),
            (7_620_000.0, "2h07m"),
            (273_600_000.0, "3d04h"),
            (-1.0, "-"),
        ];
        for (ms, shown) in cases {
            assert_eq!(age(ms), shown, "{ms}");
        }
    }

    #[test]
    fn test_rate() {
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(2048.0)), "2.0K/s");
        assert_eq!(rate(Some(f64::NAN)), "-");
    }

    /// Columns are as wide as their widest cell, numbers to the right, no trailing blanks.
    #[test]
    fn test_table_aligns_columns() {
        let mut table = Table::new(&[
            ("ID", Align::Right),
            ("ROUTE", Align::Left),
            ("C2U", Align::Right),
        ]);
        table.row(vec!["7".into(), "web".into(), "64.0K".into()]);
        table.row(vec!["1234".into(), "database".into(), "0".into()]);
        assert_eq!(
            table.render(),
            "  ID  ROUTE       C2U\n   7  web       64.0K\n1234  database      0\n"
        );
    }

    #[test]
    fn test_cells_of_json() {
        let object: Value =
            serde_json::from_str(r#"{"a":"web","b":null,"c":3,"d":true,"e":["x","y"],"f":65536}"#)
                .expect("json");
        assert_eq!(cell(&object, "a"), "web");
        assert_eq!(cell(&object, "b"), "-");
        assert_eq!(cell(&object, "missing"), "-");
        assert_eq!(cell(&object, "c"), "3");
        assert_eq!(cell(&object, "d"), "true");
        assert_eq!(cell(&object, "e"), "x,y");
        assert_eq!(bytes_cell(&object, "f"), "64.0K");
        assert_eq!(bytes_cell(&object, "a"), "-");
        assert_eq!(age_cell(&object, "f"), "1m05s");
    }
}
