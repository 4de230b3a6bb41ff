//! The frame of every page: the head (inline stylesheet, viewport for
//! phones), a skip link, a header with the product's name and the
//! navigation, and the page's `main` with its title.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::style::STYLESHEET;

/// A page: built with its product, title and navigation, then rendered
/// around a body.
///
/// ```
/// use banalytics_ui::{maud::html, Page};
/// let page = Page::new("Banalytics fleet console", "Modules")
///     .nav("/console", "Environments")
///     .nav("/console/modules", "Modules")
///     .current("/console/modules")
///     .script("/console/console.js")
///     .render(html! { p { "…" } });
/// assert!(page.into_string().contains(r#"aria-current="page""#));
/// ```
#[derive(Clone, Debug)]
pub struct Page<'a> {
    product: &'a str,
    title: &'a str,
    nav: Vec<(&'a str, &'a str)>,
    current: Option<&'a str>,
    nav_end: Option<Markup>,
    scripts: Vec<&'a str>,
}

impl<'a> Page<'a> {
    /// A page of `product` (the header's name) titled `title`.
    pub fn new(product: &'a str, title: &'a str) -> Self {
        Page {
            product,
            title,
            nav: Vec::new(),
            current: None,
            nav_end: None,
            scripts: Vec::new(),
        }
    }

    /// A link of the navigation, in order.
    pub fn nav(mut self, href: &'a str, label: &'a str) -> Self {
        self.nav.push((href, label));
        self
    }

    /// The navigation link (its `href`) of the section this page is in,
    /// marked `aria-current="page"`.
    pub fn current(mut self, href: &'a str) -> Self {
        self.current = Some(href);
        self
    }

    /// Markup at the navigation's end, such as a log-out form.
    pub fn nav_end(mut self, markup: Markup) -> Self {
        self.nav_end = Some(markup);
        self
    }

    /// A script loaded at the end of the body.
    pub fn script(mut self, src: &'a str) -> Self {
        self.scripts.push(src);
        self
    }

    /// The whole document around `body`.
    pub fn render(self, body: Markup) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · " (self.product) }
                    style { (PreEscaped(STYLESHEET)) }
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        span.product { (self.product) }
                        @if !self.nav.is_empty() || self.nav_end.is_some() {
                            nav aria-label="Main" {
                                ul {
                                    @for (href, label) in &self.nav {
                                        li {
                                            a href=(href) aria-current=[(self.current == Some(*href)).then_some("page")] { (label) }
                                        }
                                    }
                                }
                                @if let Some(end) = &self.nav_end { div.nav-end { (end) } }
                            }
                        }
                    }
                    main id="main" {
                        h1 { (self.title) }
                        (body)
                    }
                    @for src in &self.scripts {
                        script src=(src) {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_usable_on_a_phone_and_by_keyboard() {
        let html = Page::new("Console", "Modules")
            .nav("/a", "A")
            .nav("/b", "B")
            .current("/b")
            .render(html! { p { "body" } })
            .into_string();
        assert!(
            html.contains(
                r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#
            ),
            "{html}"
        );
        assert!(
            html.contains(r##"<a class="skip" href="#main">Skip to content</a>"##),
            "{html}"
        );
        assert!(html.contains(r#"<a href="/a">A</a>"#), "{html}");
        assert!(
            html.contains(r#"<a href="/b" aria-current="page">B</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<main id="main"><h1>Modules</h1><p>body</p></main>"#),
            "{html}"
        );
        assert!(html.contains("<title>Modules · Console</title>"), "{html}");
    }
}
