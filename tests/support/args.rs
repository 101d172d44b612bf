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
