//! Two sets of modules compared module by module: which module a set adds,
//! which it changes (another version) and which it removes. A set is what
//! the caller has: `(module, version)` pairs, where a module is whatever
//! names it without its version (`com.example:alpha`).

use std::collections::BTreeMap;

use maud::{html, Markup};

use crate::components::{badge, table, Outcome};

/// How a module differs from one set to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only in the second set.
    Added,
    /// In both, with other versions.
    Changed,
    /// Only in the first set.
    Removed,
    /// In both, the same version.
    Unchanged,
}

impl Change {
    /// The word for it.
    pub fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
            Change::Unchanged => "unchanged",
        }
    }

    fn outcome(self) -> Outcome {
        match self {
            Change::Added => Outcome::Good,
            Change::Changed => Outcome::Running,
            Change::Removed => Outcome::Bad,
            Change::Unchanged => Outcome::Neutral,
        }
    }
}

/// One module of the two sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffRow {
    /// The module, without its version.
    pub module: String,
    /// How it differs.
    pub change: Change,
    /// Its version in the first set.
    pub from: Option<String>,
    /// Its version in the second set.
    pub to: Option<String>,
}

/// `coords` split at its last `:` into the module and its version
/// (`com.example:alpha:2.0` → `("com.example:alpha", "2.0")`); without a
/// `:`, all of it is the module and the version is empty.
pub fn split_version(coords: &str) -> (&str, &str) {
    coords.rsplit_once(':').unwrap_or((coords, ""))
}

/// The module-by-module difference from `from` to `to`, in the order of
/// the modules' names. A module named twice in a set counts with its last
/// version.
pub fn diff<M, V>(
    from: impl IntoIterator<Item = (M, V)>,
    to: impl IntoIterator<Item = (M, V)>,
) -> Vec<DiffRow>
where
    M: Into<String>,
    V: Into<String>,
{
    let mut modules: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for (m, v) in from {
        modules.entry(m.into()).or_default().0 = Some(v.into());
    }
    for (m, v) in to {
        modules.entry(m.into()).or_default().1 = Some(v.into());
    }
    modules
        .into_iter()
        .map(|(module, (from, to))| {
            let change = match (&from, &to) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                (Some(a), Some(b)) if a == b => Change::Unchanged,
                _ => Change::Changed,
            };
            DiffRow {
                module,
                change,
                from,
                to,
            }
        })
        .collect()
}

/// `2 added, 1 changed, 0 removed, 3 unchanged`, or `the same set` when
/// nothing differs.
pub fn diff_summary(rows: &[DiffRow]) -> String {
    let count = |c: Change| rows.iter().filter(|r| r.change == c).count();
    let (added, changed, removed) = (
        count(Change::Added),
        count(Change::Changed),
        count(Change::Removed),
    );
    if added + changed + removed == 0 {
        return "the same set".to_string();
    }
    format!(
        "{added} added, {changed} changed, {removed} removed, {} unchanged",
        count(Change::Unchanged)
    )
}

/// The difference as a table (id `id`): a row per module with its two
/// versions and what changed, in words and colour (`+` added, `~`
/// changed, `−` removed); `from_label` and `to_label` name the two sets'
/// columns (`Installed`, `Assigned`).
pub fn diff_table(id: &str, rows: &[DiffRow], from_label: &str, to_label: &str) -> Markup {
    let caption = format!("{from_label} → {to_label}: {}", diff_summary(rows));
    let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".to_string());
    table(
        id,
        &caption,
        &["Module", from_label, to_label, "Change"],
        html! {
            @for r in rows {
                tr class={ "diff diff-" (r.change.word()) } data-module=(r.module) data-change=(r.change.word()) {
                    td {
                        span.diff-mark aria-hidden="true" {
                            (match r.change { Change::Added => "+", Change::Changed => "~", Change::Removed => "−", Change::Unchanged => " " })
                        }
                        " " (r.module)
                    }
                    td data-label=(from_label) { (version(&r.from)) }
                    td data-label=(to_label) { (version(&r.to)) }
                    td { (badge(r.change.outcome(), r.change.word())) }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(coords: &[&'static str]) -> Vec<(&'static str, &'static str)> {
        coords.iter().map(|c| split_version(c)).collect()
    }

    #[test]
    fn a_diff_marks_each_module_added_changed_removed_or_unchanged() {
        let installed = set(&["g:alpha:1.0", "g:beta:1.0", "g:gone:3"]);
        let assigned = set(&["g:alpha:2.0", "g:beta:1.0", "g:new:1"]);
        let rows = diff(installed, assigned);
        let got: Vec<(&str, Change, Option<&str>, Option<&str>)> = rows
            .iter()
            .map(|r| {
                (
                    r.module.as_str(),
                    r.change,
                    r.from.as_deref(),
                    r.to.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("g:alpha", Change::Changed, Some("1.0"), Some("2.0")),
                ("g:beta", Change::Unchanged, Some("1.0"), Some("1.0")),
                ("g:gone", Change::Removed, Some("3"), None),
                ("g:new", Change::Added, None, Some("1")),
            ]
        );
        assert_eq!(
            diff_summary(&rows),
            "1 added, 1 changed, 1 removed, 1 unchanged"
        );
    }

    #[test]
    fn equal_sets_are_the_same_set() {
        let rows = diff(set(&["g:a:1"]), set(&["g:a:1"]));
        assert_eq!(diff_summary(&rows), "the same set");
        assert_eq!(diff_summary(&diff(set(&[]), set(&[]))), "the same set");
    }

    #[test]
    fn split_version_cuts_at_the_last_colon() {
        assert_eq!(
            split_version("com.example:alpha:2.0"),
            ("com.example:alpha", "2.0")
        );
        assert_eq!(split_version("plain"), ("plain", ""));
    }

    #[test]
    fn a_diff_table_marks_changes_in_words_and_class() {
        let rows = diff(set(&["g:a:1", "g:b:1"]), set(&["g:a:2"]));
        let html = diff_table("d", &rows, "Installed", "Assigned").into_string();
        assert!(
            html.contains(
                r#"<tr class="diff diff-changed" data-module="g:a" data-change="changed">"#
            ),
            "{html}"
        );
        assert!(html.contains("diff-removed"), "{html}");
        assert!(
            html.contains("Installed → Assigned: 0 added, 1 changed, 1 removed, 0 unchanged"),
            "{html}"
        );
    }
}
