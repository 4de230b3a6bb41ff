//! The stylesheet, served inline in each page's `<head>`: no file to
//! fetch, nothing to build. A light theme with the system's fonts; each
//! text colour is at least 4.5:1 against its background (WCAG AA), and a
//! status never relies on colour alone (badges carry a word and a mark).
//! From 640 px down (a phone's 390 px) the header stacks, forms take the
//! full width and wide tables scroll inside their frame.

/// The stylesheet both consoles use.
pub const STYLESHEET: &str = r#"
:root {
  --text: #1f2328; --muted: #57606a; --line: #d0d7de; --soft: #f6f8fa;
  --link: #0550ae; --focus: #0969da;
  --good: #116329; --good-bg: #dafbe1;
  --bad: #a40e26; --bad-bg: #ffebe9;
  --run: #0550ae; --run-bg: #ddf4ff;
  --wait: #7d4e00; --wait-bg: #fff8c5;
  --plain: #424a53; --plain-bg: #eaeef2;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; color: var(--text); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans", Arial, sans-serif;
}
a { color: var(--link); }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible,
textarea:focus-visible, .table-frame:focus-visible, summary:focus-visible {
  outline: 3px solid var(--focus); outline-offset: 2px;
}
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 0.75em; white-space: pre-wrap; overflow-wrap: anywhere; }
.skip { position: absolute; left: -999px; top: 0; background: #fff; padding: 0.5em 1em; z-index: 10; }
.skip:focus { left: 0.5em; }

header.top {
  display: flex; flex-wrap: wrap; align-items: center; gap: 0.5em 2em;
  padding: 0.6em 2em; background: var(--soft); border-bottom: 1px solid var(--line);
}
.product { font-weight: 600; }
header nav { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5em 1.5em; flex: 1; }
header nav ul { display: flex; flex-wrap: wrap; gap: 0.25em 1.25em; list-style: none; margin: 0; padding: 0; }
header nav a { text-decoration: none; padding: 0.2em 0; border-bottom: 2px solid transparent; }
header nav a:hover { border-bottom-color: var(--line); }
header nav a[aria-current="page"] { color: var(--text); font-weight: 600; border-bottom-color: var(--focus); }
.nav-end { margin-left: auto; }

main { padding: 1em 2em 3em; max-width: 1400px; }
h1 { font-size: 1.5em; margin: 0.3em 0 0.6em; overflow-wrap: anywhere; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; }
p { margin: 0.5em 0; }

.table-frame { overflow-x: auto; margin: 0.5em 0 1em; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { text-align: left; vertical-align: top; padding: 0.4em 0.7em; border-bottom: 1px solid var(--line); }
thead th { background: var(--soft); font-weight: 600; white-space: nowrap; }
table.details th[scope="row"] { width: 14em; color: var(--muted); font-weight: 600; }
tbody tr:hover { background: #fafbfc; }
td.num, th.num { text-align: right; white-space: nowrap; }

.badge {
  display: inline-block; padding: 0.05em 0.6em; border-radius: 1em; font-size: 0.875em;
  font-weight: 600; white-space: nowrap; border: 1px solid transparent;
}
.badge-good { color: var(--good); background: var(--good-bg); border-color: #8fd5a0; }
.badge-bad { color: var(--bad); background: var(--bad-bg); border-color: #f5a3a8; }
.badge-running { color: var(--run); background: var(--run-bg); border-color: #8cc6f0; }
.badge-waiting { color: var(--wait); background: var(--wait-bg); border-color: #e6cc5c; }
.badge-neutral { color: var(--plain); background: var(--plain-bg); border-color: var(--line); }
.ok { color: var(--good); } .bad { color: var(--bad); } .dim, .ago, .field-hint { color: var(--muted); }
.message { overflow-wrap: anywhere; }
td.clamp .message { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
td.clamp { min-width: 14em; max-width: 24em; }
.when, .id { white-space: nowrap; }

tr.diff-added { background: #f0fff4; }
tr.diff-removed { background: #fff5f5; }
tr.diff-changed { background: #f3f9ff; }
tr.diff-unchanged td { color: var(--muted); }
.diff-mark { display: inline-block; width: 1em; font-weight: 700; font-family: ui-monospace, monospace; }

.progress { display: flex; flex-wrap: wrap; align-items: center; gap: 0.25em 0.75em; margin: 0.25em 0; }
.progress-label { min-width: 12em; overflow-wrap: anywhere; }
progress { width: 14em; max-width: 100%; height: 1em; accent-color: var(--focus); }
.progress-words { color: var(--muted); font-size: 0.9em; white-space: nowrap; }

.empty { border: 1px dashed var(--line); border-radius: 6px; padding: 1em 1.25em; margin: 0.75em 0; background: var(--soft); }
.empty-title { font-weight: 600; margin: 0 0 0.25em; }
.empty-todo { margin: 0; }
.notice { border-left: 4px solid var(--wait); background: var(--wait-bg); padding: 0.6em 1em; }
.error { border-left: 4px solid var(--bad); background: var(--bad-bg); padding: 0.6em 1em; }

form { margin: 0.5em 0; }
form.inline { display: inline-block; margin: 0 0.25em 0 0; }
.actions { display: flex; flex-wrap: wrap; gap: 0.5em; align-items: center; margin: 0.75em 0; }
.actions form { margin: 0; }
fieldset { border: 1px solid var(--line); border-radius: 6px; margin: 0.75em 0; padding: 0.5em 1em 1em; }
legend { font-weight: 600; padding: 0 0.3em; }
.field { display: inline-flex; flex-direction: column; gap: 0.15em; margin: 0.3em 1em 0.3em 0; vertical-align: top; }
.field-label { font-weight: 600; font-size: 0.9em; }
.field-hint { font-size: 0.85em; }
.check { display: block; margin: 0.2em 0; }
input, select, textarea {
  font: inherit; color: var(--text); background: #fff; border: 1px solid #8c959f;
  border-radius: 6px; padding: 0.3em 0.5em; max-width: 100%;
}
input[type="checkbox"], input[type="radio"] { width: 1.1em; height: 1.1em; vertical-align: -0.15em; accent-color: var(--focus); }
.button, button {
  font: inherit; font-weight: 600; cursor: pointer; padding: 0.35em 0.9em; border-radius: 6px;
  color: var(--text); background: var(--soft); border: 1px solid #8c959f;
}
.button:hover, button:hover { background: var(--plain-bg); }
.button-primary { color: #fff; background: var(--link); border-color: var(--link); }
.button-primary:hover { background: #033d8b; }
.button-danger { color: #fff; background: var(--bad); border-color: var(--bad); }
.button-danger:hover { background: #82071e; }

@media (max-width: 640px) {
  body { font-size: 15px; }
  header.top { flex-direction: column; align-items: flex-start; padding: 0.5em 1em; }
  header nav { width: 100%; }
  .nav-end { margin-left: auto; }
  main { padding: 0.75em 1em 2em; }
  th, td { padding: 0.35em 0.5em; }
  /* Tables become a card per row: each cell on its own line, labelled
     with its column's header when the cell has a data-label. */
  .table-frame table, .table-frame tbody, .table-frame tr, .table-frame td, .table-frame th[scope="row"] { display: block; width: auto; max-width: none; }
  .table-frame caption { display: flex; }
  .table-frame thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
  .table-frame tr { border-bottom: 1px solid var(--line); padding: 0.4em 0; }
  .table-frame td, .table-frame th[scope="row"] { border: 0; padding: 0.15em 0.25em; }
  .table-frame td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); font-weight: 600; }
  td.num { text-align: left; }
  table.details th[scope="row"] { width: auto; padding-top: 0.4em; }
  .field { display: flex; margin-right: 0; }
  .field input, .field select, .field textarea { width: 100%; }
  .progress-label { min-width: 0; width: 100%; }
  progress { width: 100%; }
}
"#;
