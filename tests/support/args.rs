//! Command-line flags of the bench harnesses, which parse by hand to keep their dependencies to
//! the product's.

/// Splits `--flag=value` into the flag and its inline value; any other argument (including a
/// lone `--flag`, whose value is the next argument) comes back whole with no value.
pub fn split_flag(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
        _ => (arg, None),
    }
}

/// The value of `flag`: its inline value if it had one (`--flag=value`), else the next argument.
pub fn value_of<'a>(
    flag: &str,
    inline: &Option<String>,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<String, String> {
    inline
        .clone()
        .or_else(|| rest.next().cloned())
        .ok_or_else(|| format!("{flag} needs a value"))
}

/// A bench's command line, walked flag by flag: `--flag value` and `--flag=value` alike, with the
/// `--bench` that cargo appends to every bench binary's arguments passed over.
pub struct Flags<'a> {
    rest: std::slice::Iter<'a, String>,
    /// The flag last returned.
    flag: &'a str,
    /// Its inline value (`--flag=value`), if it had one.
    inline: Option<String>,
}

impl<'a> Flags<'a> {
    pub fn new(args: &'a [String]) -> Flags<'a> {
        Flags {
            rest: args.iter(),
            flag: "",
            inline: None,
        }
    }

    /// The next flag (or bare word), `None` after the last.
    pub fn next_flag(&mut self) -> Option<&'a str> {
        loop {
            let (flag, inline) = split_flag(self.rest.next()?);
            if flag != "--bench" {
                (self.flag, self.inline) = (flag, inline);
                return Some(flag);
            }
        }
    }

    /// The value of the flag last returned: its inline value if it had one, else the next argument.
    pub fn value(&mut self) -> Result<String, String> {
        value_of(self.flag, &self.inline, &mut self.rest)
    }
}

/// The command that reproduces this run, for the header of a report: `cargo bench --bench NAME`
/// and the arguments, without the `--bench` that cargo appends to every bench binary's own.
pub fn command_line(bench: &str, args: &[String]) -> String {
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    match shown.is_empty() {
        true => format!("cargo bench --bench {bench}"),
        false => format!("cargo bench --bench {bench} -- {}", shown.join(" ")),
    }
}
