//! Live regions: a part of a page that follows a Server-Sent Events
//! stream, each event carrying the region's new HTML.
//!
//! A region is sent only when it differs from what the browser shows.
//! The page names the version it rendered (`seen=` in the stream's URL),
//! each event carries its version as its SSE `id`, and a reconnecting
//! `EventSource` sends the last one back as `Last-Event-ID`. Sending the
//! page's own HTML again would replace every element of the region just
//! after the page loaded: the keyboard focus would be lost, and a button
//! the user is about to press would be swapped under the pointer.

use std::hash::{DefaultHasher, Hasher};

use maud::{html, Markup, PreEscaped};

/// The opening of the relative part of a [`time`](crate::time), which
/// `TIME_SCRIPT` keeps true in the browser.
const AGO: &str = "<span class=\"ago\">";

/// The version of a region's HTML: a digest that names it in the stream.
/// The relative times ("(3 min ago)") are left out: they change by the
/// second, and the browser keeps them true itself (`TIME_SCRIPT`), so a
/// region is not sent again only because time passed.
pub fn live_version(html: &str) -> String {
    let mut h = DefaultHasher::new();
    let mut rest = html;
    while let Some(start) = rest.find(AGO) {
        let (kept, ago) = rest.split_at(start + AGO.len());
        h.write(kept.as_bytes());
        rest = ago.find("</span>").map_or("", |end| &ago[end..]);
    }
    h.write(rest.as_bytes());
    format!("{:016x}", h.finish())
}

/// A live region, `id="live"`: `now`, then what the stream at `events`
/// (a URL, with or without a query) sends. `seen=` with the version of
/// `now` is added to that URL.
pub fn live_region(events: &str, now: Markup) -> Markup {
    let now = now.into_string();
    let join = if events.contains('?') { '&' } else { '?' };
    html! {
        div id="live" data-sse={ (events) (join) "seen=" (live_version(&now)) } {
            (PreEscaped(now))
        }
    }
}

/// The server's side of one live region's stream: which renders to send.
#[derive(Debug, Default)]
pub struct LiveStream {
    shown: Option<String>,
}

impl LiveStream {
    /// A stream to a browser that shows `last_event_id` (the header a
    /// reconnecting `EventSource` sends) or else `seen` (the page's
    /// version); with neither, the first render is sent.
    pub fn new(last_event_id: Option<&str>, seen: Option<&str>) -> LiveStream {
        LiveStream {
            shown: last_event_id.or(seen).map(str::to_owned),
        }
    }

    /// The version to send `html` with (the SSE event's `id`), or `None`
    /// when the browser shows it already. What is returned counts as shown.
    pub fn send(&mut self, html: &str) -> Option<String> {
        let version = live_version(html);
        if self.shown.as_deref() == Some(version.as_str()) {
            return None;
        }
        self.shown = Some(version.clone());
        Some(version)
    }
}

/// The lines of script that make each `data-sse` element follow its stream
/// (a console embeds them in its one script). The element that had the
/// keyboard focus gets it back when an element of the new HTML has its id.
pub const LIVE_SCRIPT: &str = r#"document.querySelectorAll("[data-sse]").forEach(function (el) {
  var source = new EventSource(el.dataset.sse);
  source.onmessage = function (e) {
    var active = document.activeElement;
    var focused = active && el.contains(active) ? active.id : "";
    el.innerHTML = e.data;
    var again = focused && document.getElementById(focused);
    if (again) { again.focus(); }
  };
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_names_the_version_of_what_it_shows() {
        let html =
            live_region("/console/events?view=envs", html! { p { "3 boxes" } }).into_string();
        let version = live_version("<p>3 boxes</p>");
        assert_eq!(
            html,
            format!(
                "<div id=\"live\" data-sse=\"/console/events?view=envs&amp;seen={version}\">\
                 <p>3 boxes</p></div>"
            )
        );
        let bare = live_region("/events", html! {}).into_string();
        assert!(bare.contains("/events?seen="), "{bare}");
    }

    #[test]
    fn a_version_leaves_out_relative_times_only() {
        let at = crate::unix_ms(1_700_000_000_000);
        let page = |now_ms: u64, label: &str| {
            html! { p { (label) " " (crate::time(at, crate::unix_ms(now_ms))) } }.into_string()
        };
        let (early, late) = (page(1_700_000_010_000, "a"), page(1_700_000_200_000, "a"));
        assert_ne!(early, late, "10 s ago, then 3 min ago");
        assert_eq!(live_version(&early), live_version(&late));
        assert_ne!(
            live_version(&early),
            live_version(&page(1_700_000_010_000, "b"))
        );
        let other = crate::time(
            crate::unix_ms(1_700_000_001_000),
            crate::unix_ms(1_700_000_010_000),
        );
        assert_ne!(
            live_version(&early),
            live_version(&html! { p { "a " (other) } }.into_string()),
            "the absolute time counts"
        );
    }

    #[test]
    fn a_stream_sends_only_what_the_browser_does_not_show() {
        let a = "<p>3 boxes</p>";
        let b = "<p>4 boxes</p>";
        // A page that shows `a` opens its stream: `a` is not sent again.
        let mut page = LiveStream::new(None, Some(&live_version(a)));
        assert_eq!(page.send(a), None);
        assert_eq!(page.send(b), Some(live_version(b)));
        assert_eq!(page.send(b), None);
        assert_eq!(page.send(a), Some(live_version(a)));
        // A reconnection names the last event it had, not the page's.
        let mut again = LiveStream::new(Some(&live_version(b)), Some(&live_version(a)));
        assert_eq!(again.send(b), None);
        // A stream opened without a version gets the first render.
        assert_eq!(LiveStream::new(None, None).send(a), Some(live_version(a)));
    }
}
