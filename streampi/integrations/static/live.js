// streampi's live view: polls /api/stats, shows each stream's MJPEG picture and counters,
// the workers and the latest events. No framework, no build step, nothing from the internet.
"use strict";
(function () {
  const key = new URLSearchParams(location.search).get("api_key");
  const q = key ? "?api_key=" + encodeURIComponent(key) : "";
  const api = (path) => "api/" + path + q;
  // a browser opens about 6 connections per server: each live picture holds one
  const AUTO_WATCH = 4;
  const cards = new Map();

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c);
    return e;
  }
  const fmt = (v, digits) => (v === null || v === undefined) ? "–" : (digits === undefined ? String(v) : Number(v).toFixed(digits));

  function card(name) {
    let c = cards.get(name);
    if (c) return c;
    const watch = el("input", {type: "checkbox"});
    watch.checked = cards.size < AUTO_WATCH;
    const pic = el("div");
    const counters = el("dl", {class: "counters"});
    const box = el("div", {class: "stream", "data-stream": name},
      el("h2", {}, el("span", {}, name), el("label", {}, watch, " watch")), pic, counters);
    c = {box, watch, pic, counters, img: null};
    watch.addEventListener("change", () => show(name, c));
    cards.set(name, c);
    document.getElementById("streams").append(box);
    document.getElementById("no-streams").hidden = true;
    show(name, c);
    return c;
  }

  function show(name, c) {
    c.pic.textContent = "";
    if (c.img) { c.img.src = ""; c.img = null; }  // closes the MJPEG connection
    if (c.watch.checked) {
      c.img = el("img", {class: "live", alt: "live view of " + name, src: api(encodeURIComponent(name) + "/live.mjpg")});
      c.pic.append(c.img);
    } else {
      c.pic.append(el("div", {class: "paused muted"}, "not watched (no picture is made)"));
    }
  }

  function counters(c, s) {
    const rows = [["frames in", fmt(s.frames_in)], ["processed", fmt(s.processed)], ["dropped", fmt(s.dropped)],
                  ["fps in", fmt(s.fps_in, 1)], ["detections/s", fmt(s.detections_per_s, 1)],
                  ["inference p50", s.infer_p50_ms === null ? "–" : fmt(s.infer_p50_ms, 1) + " ms"],
                  ["errors", fmt(s.errors)], ["viewers", fmt(s.viewers)],
                  ["picture", s.picture ? s.picture.width + "×" + s.picture.height : "–"]];
    c.counters.textContent = "";
    for (const [k, v] of rows) {
      c.counters.append(el("dt", {}, k), el("dd", {"data-counter": k.replace(/[^a-z0-9]+/g, "_")}, v));
    }
  }

  function render(st) {
    document.getElementById("model").textContent = st.model.name + " (" + st.model.sha256 + ")";
    const health = document.getElementById("health");
    health.textContent = st.healthy ? "healthy" : "unhealthy";
    health.className = "badge " + (st.healthy ? "ok" : "bad");
    document.getElementById("uptime").textContent = "up " + Math.round(st.uptime_s) + " s";
    document.getElementById("problems").textContent = st.problems.join("; ");
    for (const [name, s] of Object.entries(st.streams)) counters(card(name), s);
    const tbody = document.querySelector("#workers tbody");
    tbody.textContent = "";
    for (const w of st.workers) {
      tbody.append(el("tr", {}, el("td", {}, String(w.index)), el("td", {}, w.state), el("td", {}, w.process),
                      el("td", {}, fmt(w.frames_done)), el("td", {}, fmt(w.restarts))));
    }
    const list = document.getElementById("events");
    document.getElementById("events-off").hidden = st.events_enabled;
    list.textContent = "";
    for (const ev of (st.events || [])) {
      const o = ev.after || {};
      const when = new Date((o.frame_time || o.start_time || 0) * 1000).toLocaleTimeString();
      const li = el("li", {}, el("span", {}, when + " " + ev.type + " " + o.label + " #" + o.id +
                                             " on " + o.stream + " (" + fmt(o.top_score, 2) + ")" +
                                             (o.zones && o.zones.length ? " in " + o.zones.join(", ") : "")));
      if (o.has_snapshot) li.prepend(el("img", {alt: "snapshot of " + o.id, loading: "lazy",
                                               src: api("events/" + encodeURIComponent(o.id) + "/snapshot.jpg")}));
      list.append(li);
    }
    document.getElementById("view-info").textContent =
      "pictures: " + st.view.fps + " per second at most, " + st.view.width + " pixels wide; viewers " +
      st.view.viewers + " of " + st.view.max_viewers +
      (st.streams_not_shown ? "; frames of streams not shown: " + st.streams_not_shown : "");
  }

  async function poll() {
    try {
      const r = await fetch(api("stats"), {cache: "no-store"});
      if (r.ok) render(await r.json());
    } catch (e) { /* the server restarts: try again */ }
    setTimeout(poll, 1000);
  }
  poll();
})();
