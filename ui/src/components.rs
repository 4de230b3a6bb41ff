//! The pieces of a page: badges, progress bars, empty states, tables,
//! buttons and form fields. Each carries its meaning in words as well as
//! colour, and each control has a label a screen reader announces.

use maud::{html, Markup};

use crate::format::human_size;

/// What a status means to the person reading it, which decides its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done and well: installed, connected, ok (green).
    Good,
    /// Failed: an error, a rollback, a refusal, offline (red).
    Bad,
    /// Under way: downloading, installing (blue).
    Running,
    /// Waiting for something: a window, an approval, a wave (amber).
    Waiting,
    /// Neither: a plain fact (grey).
    Neutral,
}

impl Outcome {
    fn class(self) -> &'static str {
        match self {
            Outcome::Good => "badge badge-good",
            Outcome::Bad => "badge badge-bad",
            Outcome::Running => "badge badge-running",
            Outcome::Waiting => "badge badge-waiting",
            Outcome::Neutral => "badge badge-neutral",
        }
    }

    /// A mark beside the word, for a reader who does not see colour
    /// (hidden from screen readers, which read the word).
    fn mark(self) -> &'static str {
        match self {
            Outcome::Good => "✓",
            Outcome::Bad => "✗",
            Outcome::Running => "↻",
            Outcome::Waiting => "…",
            Outcome::Neutral => "•",
        }
    }
}

/// A status badge: `text`, coloured by `outcome`, with a mark.
pub fn badge(outcome: Outcome, text: &str) -> Markup {
    html! {
        span class=(outcome.class()) data-outcome=(format!("{outcome:?}").to_lowercase()) {
            span.badge-mark aria-hidden="true" { (outcome.mark()) } " " (text)
        }
    }
}

/// A progress bar with its label and its numbers in words: `label`,
/// `done` of `total` bytes (`12.0 MiB of 91.9 MiB, 13 %`); without a total,
/// a bar that only says something moves, with the bytes so far.
pub fn progress(label: &str, done: u64, total: Option<u64>) -> Markup {
    let words = match total {
        Some(t) if t > 0 => format!(
            "{} of {} ({} %)",
            human_size(done.min(t)),
            human_size(t),
            (u128::from(done.min(t)) * 100 / u128::from(t))
        ),
        _ => format!("{} so far", human_size(done)),
    };
    html! {
        div.progress {
            span.progress-label { (label) }
            @match total {
                Some(t) if t > 0 => progress value=(done.min(t)) max=(t) aria-label=(label) { (words) },
                _ => progress aria-label=(label) { (words) },
            }
            span.progress-words { (words) }
        }
    }
}

/// An empty state: what is missing (`title`) and what to do about it.
pub fn empty(title: &str, what_to_do: Markup) -> Markup {
    html! {
        div.empty {
            p.empty-title { (title) }
            p.empty-todo { (what_to_do) }
        }
    }
}

/// A table with a caption and column headers; `rows` are its `tr`s. On a
/// phone each row becomes a card, a cell a line: a `td` with
/// `data-label="HEADER"` is labelled there with its column's header.
/// Wider than its frame, it scrolls inside it (the frame takes the
/// keyboard focus, so it can be scrolled without a mouse).
pub fn table(id: &str, caption: &str, headers: &[&str], rows: Markup) -> Markup {
    html! {
        div.table-frame tabindex="0" role="region" aria-label=(caption) {
            table id=(id) {
                caption { (caption) }
                thead { tr { @for h in headers { th scope="col" { (h) } } } }
                tbody { (rows) }
            }
        }
    }
}

/// A two-column table of facts about one thing: each row a header (`th
/// scope="row"`) and its value.
pub fn details<'a>(
    id: &str,
    caption: &str,
    rows: impl IntoIterator<Item = (&'a str, Markup)>,
) -> Markup {
    html! {
        div.table-frame tabindex="0" role="region" aria-label=(caption) {
            table.details id=(id) {
                caption { (caption) }
                tbody {
                    @for (name, value) in rows {
                        tr { th scope="row" { (name) } td { (value) } }
                    }
                }
            }
        }
    }
}

/// A labelled form field: the label's text, then the control (an
/// `input`, `select` or `textarea`) inside the label, which names it.
pub fn field(label: &str, control: Markup) -> Markup {
    html! {
        label.field { span.field-label { (label) } (control) }
    }
}

/// A labelled form field with a line of help below it.
pub fn field_with_hint(label: &str, control: Markup, hint: &str) -> Markup {
    html! {
        label.field { span.field-label { (label) } (control) span.field-hint { (hint) } }
    }
}

/// The look of a button.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ButtonKind {
    /// The page's main action.
    Primary,
    /// Any other action.
    #[default]
    Secondary,
    /// An action that takes something away or restarts something.
    Danger,
}

impl ButtonKind {
    fn class(self) -> &'static str {
        match self {
            ButtonKind::Primary => "button button-primary",
            ButtonKind::Secondary => "button",
            ButtonKind::Danger => "button button-danger",
        }
    }
}

/// A button; [`Button::post`] makes it a one-button form that posts to an
/// action, [`Button::submit`] a submit button of the form around it.
#[derive(Clone, Debug)]
pub struct Button<'a> {
    label: &'a str,
    action: Option<&'a str>,
    id: Option<&'a str>,
    name_value: Option<(&'a str, &'a str)>,
    kind: ButtonKind,
    hidden: Vec<(&'a str, &'a str)>,
    confirm: Option<&'a str>,
}

impl<'a> Button<'a> {
    /// A button that posts a form of its own to `action`.
    pub fn post(action: &'a str, label: &'a str) -> Self {
        Button {
            action: Some(action),
            ..Button::submit(label)
        }
    }

    /// A submit button of the enclosing form.
    pub fn submit(label: &'a str) -> Self {
        Button {
            label,
            action: None,
            id: None,
            name_value: None,
            kind: ButtonKind::default(),
            hidden: Vec::new(),
            confirm: None,
        }
    }

    /// The button's `id`.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// The button's look.
    pub fn kind(mut self, kind: ButtonKind) -> Self {
        self.kind = kind;
        self
    }

    /// The `name` and `value` the button submits when pressed.
    pub fn value(mut self, name: &'a str, value: &'a str) -> Self {
        self.name_value = Some((name, value));
        self
    }

    /// A hidden field of the button's own form (with [`Button::post`]).
    pub fn hidden(mut self, name: &'a str, value: &'a str) -> Self {
        self.hidden.push((name, value));
        self
    }

    /// A question to confirm before the form is sent (with
    /// [`Button::post`]): the form's `data-confirm`, which
    /// [`CONFIRM_SCRIPT`] asks.
    pub fn confirm(mut self, question: &'a str) -> Self {
        self.confirm = Some(question);
        self
    }

    /// The markup.
    pub fn render(&self) -> Markup {
        let button = html! {
            button type="submit" class=(self.kind.class()) id=[self.id]
                name=[self.name_value.map(|(n, _)| n)] value=[self.name_value.map(|(_, v)| v)] {
                (self.label)
            }
        };
        match self.action {
            None => button,
            Some(action) => html! {
                form.inline method="post" action=(action) data-confirm=[self.confirm] {
                    @for (name, value) in &self.hidden {
                        input type="hidden" name=(name) value=(value);
                    }
                    (button)
                }
            },
        }
    }
}

/// The lines of script that ask a form's `data-confirm` question before it
/// is sent; a console embeds them in its one script.
pub const CONFIRM_SCRIPT: &str = r#"document.addEventListener("submit", function (e) {
  var q = e.target.dataset && e.target.dataset.confirm;
  if (q && !window.confirm(q)) { e.preventDefault(); }
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_badge_says_its_outcome_in_words_and_class() {
        let html = badge(Outcome::Bad, "failed").into_string();
        assert!(html.contains("badge-bad"), "{html}");
        assert!(html.contains("data-outcome=\"bad\""), "{html}");
        assert!(html.ends_with(" failed</span>"), "{html}");
    }

    #[test]
    fn a_progress_bar_is_labelled_and_says_its_numbers() {
        let html =
            progress("com.example:alpha:2.0", 12 * 1024 * 1024, Some(96_348_848)).into_string();
        assert!(
            html.contains(
                r#"<progress value="12582912" max="96348848" aria-label="com.example:alpha:2.0">"#
            ),
            "{html}"
        );
        assert!(html.contains("12.0 MiB of 91.9 MiB (13 %)"), "{html}");
        let unknown = progress("x", 2048, None).into_string();
        assert!(
            unknown.contains(r#"<progress aria-label="x">"#),
            "{unknown}"
        );
        assert!(unknown.contains("2.0 KiB so far"), "{unknown}");
    }

    #[test]
    fn a_post_button_is_a_form_with_its_fields_and_question() {
        let html = Button::post("/x/discard", "Discard staged set")
            .id("discard")
            .kind(ButtonKind::Danger)
            .hidden("set", "abc")
            .confirm("Discard it?")
            .render()
            .into_string();
        assert_eq!(
            html,
            r#"<form class="inline" method="post" action="/x/discard" data-confirm="Discard it?"><input type="hidden" name="set" value="abc"><button type="submit" class="button button-danger" id="discard">Discard staged set</button></form>"#
        );
    }

    #[test]
    fn an_empty_state_says_what_is_missing_and_what_to_do() {
        let html = empty("No module yet.", html! { "Publish one." }).into_string();
        assert_eq!(
            html,
            r#"<div class="empty"><p class="empty-title">No module yet.</p><p class="empty-todo">Publish one.</p></div>"#
        );
    }

    #[test]
    fn a_field_names_its_control() {
        let html = field("Name", html! { input name="n"; }).into_string();
        assert_eq!(
            html,
            r#"<label class="field"><span class="field-label">Name</span><input name="n"></label>"#
        );
    }

    #[test]
    fn a_table_has_a_caption_and_column_headers() {
        let html = table(
            "t",
            "Modules",
            &["Module", "Size"],
            html! { tr { td { "a" } td { "1 B" } } },
        )
        .into_string();
        assert!(html.contains("<caption>Modules</caption>"), "{html}");
        assert!(html.contains(r#"<th scope="col">Size</th>"#), "{html}");
    }
}
