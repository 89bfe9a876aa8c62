// EZThrottle console: live job statuses (the list) and a job's events (its page), nothing else.
// An external file: the Content-Security-Policy allows no inline script.
"use strict";

var FINAL = ["success", "failed", "cancelled", "expired"];

function setStatus(el, status) {
  if (!el || !status || el.textContent === status) { return; }
  el.textContent = status;
  el.className = el.className.replace(/\bstatus-\S+/g, "") + " status-" + status;
}

// The job list: its jobs not final yet, watched over server-sent events (/console/jobs/live); should
// the stream fail, their statuses are asked for every 1.5 s instead.
function watchList() {
  function pending() {
    return Array.prototype.filter.call(document.querySelectorAll("tr[data-job-id]"), function (row) {
      return row.getAttribute("data-final") !== "true";
    });
  }
  function show(jobId, status) {
    var row = document.querySelector('tr[data-job-id="' + jobId + '"]');
    if (!row || !status) { return; }
    setStatus(row.querySelector("[data-role=status]"), status);
    if (FINAL.indexOf(status) >= 0) { row.setAttribute("data-final", "true"); }
  }
  var timer = null;
  function poll() {
    var rows = pending();
    if (!rows.length) { return; }
    var ids = rows.map(function (r) { return r.getAttribute("data-job-id"); });
    fetch("/console/jobs/statuses?ids=" + encodeURIComponent(ids.join(",")), {credentials: "same-origin"})
      .then(function (resp) { return resp.ok ? resp.json() : {}; })
      .then(function (statuses) { Object.keys(statuses).forEach(function (id) { show(id, statuses[id]); }); })
      .catch(function () {})
      .then(function () { timer = setTimeout(poll, 1500); });
  }
  var ids = pending().map(function (r) { return r.getAttribute("data-job-id"); });
  if (!ids.length) { return; }
  var source = new EventSource("/console/jobs/live?ids=" + encodeURIComponent(ids.join(",")));
  source.addEventListener("status", function (msg) {
    try { var data = JSON.parse(msg.data); show(data.job_id, data.status); } catch (e) { /* ignore */ }
  });
  source.addEventListener("end", function () { source.close(); });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) { poll(); }  // refused: ask instead
  };
  window.addEventListener("pagehide", function () { source.close(); clearTimeout(timer); });
}

// A job's page: its events over server-sent events; the details are fetched again as they change.
function watchJob(detail) {
  var log = document.getElementById("job-events");
  var source = new EventSource(detail.getAttribute("data-events"));
  var refreshing = null;
  var first = true;

  function note(kind, data) {
    if (first) { log.textContent = ""; first = false; }
    var item = document.createElement("li");
    var when = new Date(data && data.ts_ms ? data.ts_ms : Date.now()).toISOString().substring(11, 23);
    var parts = [when, kind];
    if (data) {
      if (data.region) { parts.push(data.region); }
      if (data.status_code) { parts.push("HTTP " + data.status_code); }
      if (data.decision) { parts.push(data.decision); }
      if (data.error) { parts.push(data.error); }
      if (data.status && kind !== "attempt") { parts.push(data.status); }
    }
    item.textContent = parts.join(" · ");
    log.appendChild(item);
  }

  function refresh() {
    // the server renders the page again (its details, attempts, webhooks); swap the details in
    clearTimeout(refreshing);
    refreshing = setTimeout(function () { reloadPart("job-detail"); }, 150);
  }

  function onEvent(kind) {
    return function (msg) {
      var data = null;
      try { data = JSON.parse(msg.data); } catch (e) { data = null; }
      if (kind !== "snapshot") { note(kind, data); }
      if (data && data.status) {
        setStatus(document.getElementById("job-status"), data.status);
        if (FINAL.indexOf(data.status) >= 0) {
          var cancel = document.getElementById("cancel-form");
          if (cancel) { cancel.hidden = true; }
        }
      }
      if (kind !== "snapshot") { refresh(); }
    };
  }

  ["snapshot", "dispatching", "attempt", "scheduled", "queued", "region_out", "won", "completed", "failed",
   "cancelled", "expired", "delivered", "webhook_dead", "quorum_met"].forEach(function (kind) {
    source.addEventListener(kind, onEvent(kind));
  });
  source.onerror = function () {
    // the stream ends once the job is settled; do not reconnect to a job that has ended
    var status = document.getElementById("job-status");
    if (status && FINAL.indexOf(status.textContent) >= 0) { source.close(); }
  };
  window.addEventListener("pagehide", function () { source.close(); });
}

// The element ``id`` of this page, rendered again by the server, in place of the one shown.
function reloadPart(id) {
  fetch(window.location.pathname, {credentials: "same-origin"})
    .then(function (resp) { return resp.ok ? resp.text() : null; })
    .then(function (html) {
      if (!html) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
      var current = document.getElementById(id);
      if (fresh && current) { current.replaceWith(fresh); }
    })
    .catch(function () {});
}

// The operator's regions page: the table again every 2 s (region states change without anyone here).
function watchRegions() {
  var timer = setInterval(function () { reloadPart("regions"); }, 2000);
  window.addEventListener("pagehide", function () { clearInterval(timer); });
}

document.addEventListener("DOMContentLoaded", function () {
  var page = document.body.getAttribute("data-page");
  if (page === "jobs") { watchList(); }
  if (page === "regions") { watchRegions(); }
  if (page === "job") {
    var detail = document.getElementById("job-detail");
    if (detail) { watchJob(detail); }
  }
});
