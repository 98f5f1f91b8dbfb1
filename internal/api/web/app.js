// The live-calls page: the state of the live sessions from GET /v1/sessions,
// kept current by the session events of GET /v1/events (Server-Sent Events),
// recent history from GET /v1/history, and a chart of the number of calls
// and participants sampled every second. Everything is rendered with DOM
// nodes and textContent: room, user and device ids are never parsed as HTML.
"use strict";
(function () {
  const HISTORY_MAX = 20;
  const SAMPLE_MS = 1000;
  const SAMPLES_MAX = 600; // ten minutes

  // The token: from #token=... (then kept in this tab's session storage and
  // removed from the address bar), or typed into the form after a 401.
  let token = sessionStorage.getItem("rtcapi-token") || "";
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    token = hash.get("token");
    sessionStorage.setItem("rtcapi-token", token);
    history.replaceState(null, "", location.pathname + location.search);
  }

  const sessions = new Map(); // session_id -> {room_id, application, call_id, started_at, members: Map}
  const roomSeq = new Map(); // room_id -> the highest per-room seq applied
  let ended = []; // HistoryEntry-like {event}
  const samples = [];
  let source = null;
  let buffered = null; // events that arrive before the first state is loaded

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  function setStatus(state, text) {
    const s = $("status");
    s.dataset.state = state;
    s.textContent = text;
  }

  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
  }

  async function getJSON(url) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch(url, { headers });
    if (r.status === 401) throw Object.assign(new Error("unauthorized"), { unauthorized: true });
    const body = await r.json();
    if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
    return body;
  }

  const memberKey = (m) => m.user_id + "\u0000" + m.device_id + "\u0000" + m.membership_id;

  function loadSession(ls) {
    const members = new Map();
    for (const m of ls.members || []) members.set(memberKey(m), m);
    sessions.set(ls.session_id, {
      session_id: ls.session_id, room_id: ls.room_id, application: ls.application, call_id: ls.call_id,
      started_at: ls.started_at, members, participants: ls.participants,
    });
    roomSeq.set(ls.room_id, Math.max(roomSeq.get(ls.room_id) || 0, ls.seq));
  }

  function addEnded(ev) {
    if (ended.some((e) => e.session_id === ev.session_id)) return;
    ended.unshift(ev);
    ended.sort((a, b) => endedAt(b) - endedAt(a));
    ended = ended.slice(0, HISTORY_MAX);
  }
  const endedAt = (ev) => (ev.summary ? ev.summary.ended_at : ev.at);

  function apply(ev) {
    const last = roomSeq.get(ev.room_id) || 0;
    if (ev.seq <= last) return; // already in the state that was loaded
    roomSeq.set(ev.room_id, ev.seq);
    let s = sessions.get(ev.session_id);
    switch (ev.kind) {
      case "session_started":
        if (!s) {
          s = { session_id: ev.session_id, room_id: ev.room_id, application: ev.application, call_id: ev.call_id,
            started_at: ev.at, members: new Map(), participants: 0 };
          sessions.set(ev.session_id, s);
        }
        break;
      case "member_joined":
      case "member_updated":
        if (!s) {
          s = { session_id: ev.session_id, room_id: ev.room_id, application: ev.application, call_id: ev.call_id,
            started_at: ev.at, members: new Map(), participants: 0 };
          sessions.set(ev.session_id, s);
        }
        if (ev.member) s.members.set(memberKey(ev.member), ev.member);
        break;
      case "member_left":
        if (s && ev.member) s.members.delete(memberKey(ev.member));
        break;
      case "session_ended":
        sessions.delete(ev.session_id);
        addEnded(ev);
        break;
    }
    if (s && ev.kind !== "session_ended") s.participants = ev.participants;
  }

  function fmtDuration(ms) {
    const t = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
    const two = (n) => String(n).padStart(2, "0");
    return (h > 0 ? h + ":" + two(m) : String(m)) + ":" + two(s);
  }

  function renderCalls() {
    const list = $("calls");
    const now = Date.now();
    const all = [...sessions.values()].sort((a, b) => a.started_at - b.started_at);
    $("empty").hidden = all.length > 0;
    const nodes = [];
    let participants = 0;
    for (const s of all) {
      participants += s.members.size;
      const li = el("li", "call");
      li.dataset.sessionId = s.session_id;
      li.dataset.roomId = s.room_id;
      li.dataset.participants = String(s.members.size);
      li.append(el("div", "room", s.room_id));
      const meta = el("div", "meta");
      meta.append(s.application + (s.call_id ? " · " + s.call_id : "") + " · ");
      const dur = el("span", "duration", fmtDuration(now - s.started_at));
      dur.dataset.startedAt = String(s.started_at);
      meta.append(dur, " · " + s.members.size + (s.members.size === 1 ? " participant" : " participants"));
      li.append(meta);
      const ul = el("ul", "members");
      const members = [...s.members.values()].sort((a, b) => a.joined_at - b.joined_at);
      for (const m of members) {
        const mi = el("li", "member", m.user_id + " (" + m.device_id + ")");
        mi.dataset.userId = m.user_id;
        mi.dataset.deviceId = m.device_id;
        ul.append(mi);
      }
      li.append(ul);
      nodes.push(li);
    }
    list.replaceChildren(...nodes);
    $("totals").textContent = all.length + (all.length === 1 ? " call, " : " calls, ") + participants +
      (participants === 1 ? " participant" : " participants");
  }

  function tickDurations() {
    const now = Date.now();
    for (const d of document.querySelectorAll(".call .duration")) {
      d.textContent = fmtDuration(now - Number(d.dataset.startedAt));
    }
  }

  function renderHistory() {
    const rows = ended.map((ev) => {
      const tr = el("tr");
      tr.dataset.sessionId = ev.session_id;
      const sm = ev.summary || { ended_at: ev.at, duration_ms: 0, peak_participants: 0, distinct_users: 0 };
      tr.append(el("td", "", ev.room_id), el("td", "", ev.application + (ev.call_id ? " · " + ev.call_id : "")),
        el("td", "", new Date(sm.ended_at).toLocaleString()), el("td", "", fmtDuration(sm.duration_ms)),
        el("td", "", String(sm.peak_participants)), el("td", "", String(sm.distinct_users)));
      return tr;
    });
    $("history").replaceChildren(...rows);
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // sample records the counts now; a burst of events within 250 ms makes
  // one sample, so that a burst does not push the older samples out.
  function sample() {
    let participants = 0;
    for (const s of sessions.values()) participants += s.members.size;
    const now = Date.now(), last = samples[samples.length - 1];
    if (last && now - last.t < 250 && samples.length > 1) samples.pop();
    samples.push({ t: now, calls: sessions.size, participants });
    if (samples.length > SAMPLES_MAX) samples.shift();
  }

  // The chart: both series on one axis from 0 to the largest value seen,
  // time from the first sample to now.
  function renderChart() {
    const c = $("chart");
    const W = 600, H = 160, L = 30, R = 8, T = 8, B = 18;
    const nodes = [];
    const maxV = Math.max(1, ...samples.map((s) => Math.max(s.calls, s.participants)));
    const t1 = Date.now(), t0 = samples.length ? Math.min(samples[0].t, t1 - 60000) : t1 - 60000;
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / maxV) * (H - T - B);
    for (const v of [0, Math.ceil(maxV / 2), maxV]) {
      nodes.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      nodes.push(svg("text", { x: 4, y: y(v) + 3 }, String(v)));
    }
    nodes.push(svg("text", { x: L, y: H - 4 }, new Date(t0).toLocaleTimeString()));
    nodes.push(svg("text", { x: W - R - 50, y: H - 4 }, "now"));
    for (const key of ["calls", "participants"]) {
      // A step line: a count holds until the next sample.
      let d = "";
      samples.forEach((s, i) => {
        const px = x(s.t).toFixed(1), py = y(s[key]).toFixed(1);
        d += i === 0 ? "M" + px + "," + py : "H" + px + "V" + py;
      });
      if (samples.length) d += "H" + x(t1).toFixed(1);
      nodes.push(svg("path", { class: key, d, "data-series": key }));
    }
    c.replaceChildren(...nodes);
    c.dataset.max = String(maxV);
  }

  function render() {
    renderCalls();
    renderHistory();
    sample();
    renderChart();
  }

  function connect() {
    if (source) source.close();
    buffered = [];
    source = new EventSource(withToken("/v1/events"));
    const onEvent = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (buffered) { buffered.push(ev); return; }
      apply(ev);
      render();
    };
    for (const k of ["session_started", "member_joined", "member_updated", "member_left", "session_ended"]) {
      source.addEventListener(k, onEvent);
    }
    // Events after the last one received are gone (retention): the state
    // is read again instead of trusting what was missed.
    source.addEventListener("gap", () => {
      buffered = [];
      loadState().catch(() => setStatus("error", "reload the page"));
    });
    source.onopen = () => setStatus("live", "live");
    source.onerror = () => {
      // EventSource reconnects by itself with Last-Event-ID: nothing is
      // missed while RTC_EVENTS keeps the events.
      setStatus("connecting", "reconnecting…");
    };
  }

  async function loadState() {
    const [live, hist] = await Promise.all([getJSON("/v1/sessions"), getJSON("/v1/history?limit=" + HISTORY_MAX)
      .catch(() => ({ sessions: [] }))]);
    sessions.clear();
    for (const ls of live.sessions) loadSession(ls);
    for (const h of hist.sessions) addEnded(h.event);
    const pending = buffered || [];
    buffered = null;
    for (const ev of pending) apply(ev);
    render();
  }

  async function start() {
    $("login").hidden = true;
    setStatus("connecting", "connecting…");
    connect(); // first, so that no event falls between the state and the stream
    try {
      await loadState();
    } catch (e) {
      if (source) source.close();
      if (e.unauthorized) {
        $("login").hidden = false;
        $("login-error").textContent = token ? "The token was refused." : "";
        setStatus("error", "sign in");
      } else {
        setStatus("error", "error: " + e.message);
        setTimeout(start, 3000);
      }
    }
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("rtcapi-token", token);
    start();
  });

  setInterval(() => { tickDurations(); sample(); renderChart(); }, SAMPLE_MS);
  sample();
  renderChart();
  start();
})();
