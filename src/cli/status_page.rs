//! The status page (`GET /`) and its figures (`GET /status.json`).
//!
//! The page is one static HTML file with a small inline script that polls
//! `/status.json` every second and redraws two tables: the sinks of the running
//! statements and the sources they read. No build step and no external resources. Values
//! are put in with `textContent`, never as markup, so a reason quoting a row's value
//! cannot inject anything. The JSON is [`Status`] as serde writes it (documented in the
//! README); it holds figures, states and reasons only, never an option value.

use crate::engine::Status;

/// `/status.json`'s body.
pub(super) fn json(status: &Status) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(status)
}

/// `/`'s body.
pub(super) const HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamsql status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #f7f8fa; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  #updated { color: #5b6475; }
  #offline { display: none; background: #fde2e1; color: #8a1c17; padding: .5em .8em; border-radius: 4px; }
  table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; }
  th, td { padding: .35em .8em; border-bottom: 1px solid #e3e6eb; text-align: right; white-space: nowrap; }
  th { background: #eef1f5; font-weight: 600; }
  td.text, th.text { text-align: left; }
  .state { font-weight: 600; border-radius: 3px; padding: .1em .45em; }
  .state.connected { background: #dcf5e3; color: #17672f; }
  .state.retrying { background: #fdf0d5; color: #7a4b00; }
  .state.connecting, .state.running { background: #e6ecf7; color: #27406b; }
  .reason { color: #7a4b00; white-space: normal; }
  .empty { color: #5b6475; font-style: italic; }
  ul.rejections { margin: .3em 0 0; padding-left: 1.2em; color: #5b6475; white-space: normal; text-align: left; }
</style>
</head>
<body>
<h1>streamsql</h1>
<div id="updated">waiting for the first figures…</div>
<div id="offline">The engine is not answering (it may have exited); retrying every second.</div>

<h2>Sinks</h2>
<table id="sinks">
<thead><tr>
  <th class="text">statement</th><th class="text">table</th><th class="text">connector</th>
  <th class="text">state</th><th>rows/s</th><th>rows confirmed</th><th>in flight</th>
  <th>bytes in flight</th><th>retries</th><th>skipped</th><th>dead-lettered</th><th>duplicates</th><th>running</th>
</tr></thead>
<tbody></tbody>
</table>

<h2>Sources</h2>
<table id="sources">
<thead><tr>
  <th class="text">statement</th><th class="text">connector</th><th class="text">state</th>
  <th>rows/s</th><th>rows read</th><th>pending</th>
</tr></thead>
<tbody></tbody>
</table>

<script>
"use strict";
const SINK_COLUMNS = 13, SOURCE_COLUMNS = 6;

function cell(row, field, value, text) {
  const td = row.insertCell();
  td.dataset.field = field;
  if (text) td.className = "text";
  td.textContent = value;
  return td;
}

function stateCell(row, item) {
  const td = cell(row, "state", "", true);
  const badge = document.createElement("span");
  badge.className = "state " + item.state;
  badge.textContent = item.state;
  td.appendChild(badge);
  if (item.reason) {
    const why = document.createElement("div");
    why.className = "reason";
    why.dataset.field = "reason";
    why.textContent = item.reason;
    td.appendChild(why);
  }
}

function emptyRow(body, columns, text) {
  const td = body.insertRow().insertCell();
  td.colSpan = columns;
  td.className = "empty text";
  td.textContent = text;
}

function drawSinks(sinks) {
  const body = document.querySelector("#sinks tbody");
  body.replaceChildren();
  if (sinks.length === 0) return emptyRow(body, SINK_COLUMNS, "no statement is writing to a sink");
  for (const s of sinks) {
    const row = body.insertRow();
    row.dataset.table = s.table;
    cell(row, "statement", s.statement, true);
    cell(row, "table", s.table, true);
    cell(row, "connector", s.connector, true);
    stateCell(row, s);
    cell(row, "rows_per_second", Math.round(s.rows_per_second));
    cell(row, "rows_confirmed", s.rows_confirmed);
    cell(row, "in_flight", s.in_flight);
    cell(row, "in_flight_bytes", s.in_flight_bytes);
    cell(row, "retries", s.retries);
    cell(row, "skipped", s.skipped);
    cell(row, "dead_lettered", s.dead_lettered);
    cell(row, "duplicates", s.duplicates);
    cell(row, "running_seconds", Math.floor(s.running_seconds) + " s");
    if (s.recent_rejections.length > 0) {
      const td = body.insertRow().insertCell();
      td.colSpan = SINK_COLUMNS;
      td.className = "text";
      td.textContent = "Last rows left out of " + s.table + ":";
      const list = document.createElement("ul");
      list.className = "rejections";
      list.dataset.table = s.table;
      for (const reason of s.recent_rejections) {
        const item = document.createElement("li");
        item.textContent = reason;
        list.appendChild(item);
      }
      td.appendChild(list);
    }
  }
}

function drawSources(sources) {
  const body = document.querySelector("#sources tbody");
  body.replaceChildren();
  if (sources.length === 0) {
    return emptyRow(body, SOURCE_COLUMNS, "no running statement reads a source that reports figures");
  }
  for (const s of sources) {
    const row = body.insertRow();
    row.dataset.connector = s.connector;
    cell(row, "statement", s.statement, true);
    cell(row, "connector", s.connector, true);
    stateCell(row, s);
    cell(row, "rows_per_second", Math.round(s.rows_per_second));
    cell(row, "rows_read", s.rows_read);
    cell(row, "pending", s.pending === null ? "-" : s.pending);
  }
}

async function poll() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status);
    const status = await response.json();
    drawSinks(status.sinks);
    drawSources(status.sources);
    document.getElementById("offline").style.display = "none";
    document.getElementById("updated").textContent =
      "updated " + new Date().toLocaleTimeString() + " (every second)";
  } catch (e) {
    document.getElementById("offline").style.display = "block";
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{SinkStatus, State};

    #[test]
    fn the_json_has_a_sinks_and_a_sources_array_with_named_figures() {
        let status = Status {
            sinks: vec![SinkStatus {
                statement: 1,
                table: "out".into(),
                connector: "nats_sink".into(),
                state: State::Retrying,
                reason: Some("cannot connect".into()),
                running_seconds: 2.0,
                rows_per_second: 10.0,
                rows_confirmed: 20,
                in_flight: 3,
                in_flight_bytes: 600,
                retries: 4,
                skipped: 1,
                dead_lettered: 0,
                duplicates: 0,
                recent_rejections: vec!["row 7: bad subject".into()],
            }],
            sources: vec![],
        };
        let value: serde_json::Value = serde_json::from_str(&json(&status).unwrap()).unwrap();
        assert_eq!(value["sinks"][0]["state"], "retrying");
        assert_eq!(value["sinks"][0]["rows_confirmed"], 20);
        assert_eq!(
            value["sinks"][0]["recent_rejections"][0],
            "row 7: bad subject"
        );
        assert_eq!(value["sources"], serde_json::json!([]));
    }

    #[test]
    fn the_page_polls_the_json_and_writes_values_as_text_only() {
        assert!(HTML.contains("fetch(\"status.json\""));
        assert!(!HTML.contains("innerHTML"));
        assert!(!HTML.contains("http://") && !HTML.contains("https://"));
    }
}
