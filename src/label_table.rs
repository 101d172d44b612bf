//! Test-only: the check every enum with an `ALL` table of labelled variants shares ([`close::Cause`],
//! the PROXY header and ClientHello rejection reasons).
//!
//! Such a table is what per-variant counters index by (`ALL[i] as usize == i`) and what the metrics
//! text and the logs spell (the labels), so each enum's unit test runs the same three checks; writing
//! them once keeps the enums' tests from drifting apart.
//!
//! [`close::Cause`]: crate::close::Cause

use std::collections::HashSet;
use std::fmt::Debug;

/// Asserts that `all` is in declaration order (`index(all[i]) == i`, `index` being `variant as usize`)
/// and that `label` gives each variant its own kebab-case label (lowercase ASCII, digits, `-`).
pub(crate) fn assert_label_table<T: Copy + Debug>(
    all: &[T],
    index: impl Fn(T) -> usize,
    label: impl Fn(T) -> &'static str,
) {
    for (at, &variant) in all.iter().enumerate() {
        assert_eq!(
            index(variant),
            at,
            "{variant:?}: ALL is not in declaration order"
        );
        let text = label(variant);
        assert!(
            !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{variant:?}: label {text:?} is not kebab-case"
        );
    }
    let labels: HashSet<&str> = all.iter().map(|&variant| label(variant)).collect();
    assert_eq!(labels.len(), all.len(), "two variants share a label");
}
