// A consumer of rtc-sessions written from docs/events.md alone: it reads the
// session events of RTC_EVENTS from the start and the live sessions of the
// rtc_sessions bucket, as the read-only `subscriber` user, with nats.js and
// @msgpack/msgpack, and prints what it decoded as one JSON document:
//
//   {"events": [{"stream_seq": N, "subject": "...", "header_version": "3", "event": {...}}, ...],
//    "sessions": [{"key": "...", "session": {...}}, ...],
//    "problems": ["..."]}
//
// Configuration (environment): NATS_URL, NATS_USER, NATS_PASSWORD;
// EXPECT_EVENTS, the number of events to read before reading the live
// sessions; TIMEOUT_MS, how long to wait for them; NATSJS, the nats.js
// major version to use: 3 (@nats-io/*, the default) or 2 (the `nats`
// package). Both have the same consumer and KV watch calls used here.
import { decode } from "@msgpack/msgpack";

const env = process.env;
const expectEvents = Number(env.EXPECT_EVENTS ?? "0");
const timeoutMs = Number(env.TIMEOUT_MS ?? "30000");
const problems = [];
// Where the consumer is, for the message when it takes too long.
let step = "connect";
const watchdog = setTimeout(() => {
  console.error(`no result within ${2 * timeoutMs} ms (at: ${step})`);
  process.exit(2);
}, 2 * timeoutMs);

// Tokens (docs/events.md "Tokens"): "_" is the empty string, anything else
// unpadded URL-safe base64 of the UTF-8 bytes.
function parseToken(tok) {
  if (tok === "_") return "";
  if (!/^[A-Za-z0-9_-]+$/.test(tok)) throw new Error(`bad token ${tok}`);
  return Buffer.from(tok, "base64url").toString("utf8");
}

// The fields every session event and live session carries (docs/events.md):
// every one is present, with its zero value when empty.
const eventFields = ["v", "id", "seq", "kind", "session_id", "room_id", "application", "call_id", "at",
  "member", "changed", "reason", "participants", "users", "summary"];
const memberFields = ["user_id", "device_id", "membership_id", "joined_at", "expires_at", "focus_active",
  "foci_preferred", "call_intent", "format", "event_id"];
const sessionFields = ["v", "session_id", "room_id", "application", "call_id", "started_at", "members",
  "participants", "users", "seq", "updated_at", "members_in_keys"];

function checkFields(what, obj, fields) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    problems.push(`${what}: not a map`);
    return;
  }
  for (const f of fields) {
    if (!(f in obj)) problems.push(`${what}: no field ${f}`);
  }
}

function checkMember(what, m) {
  checkFields(what, m, memberFields);
  for (const f of ["focus_active", "foci_preferred"]) {
    const x = m?.[f];
    if (x !== null && x !== undefined && (typeof x !== "object" || x instanceof Uint8Array)) {
      problems.push(`${what}: ${f} is not a map or array`);
    }
  }
}

const opts = { servers: env.NATS_URL, user: env.NATS_USER, pass: env.NATS_PASSWORD };
let nc, js, openSessions;
const logStatus = async () => {
  for await (const st of nc.status()) {
    if (st.type === "error" || String(st.data ?? "").includes("Permissions")) console.error(`status ${st.type}: ${st.data ?? st.error ?? ""}`);
  }
};
if (env.NATSJS === "2") {
  const nats = await import("nats");
  nc = await nats.connect(opts);
  js = nc.jetstream();
  openSessions = () => js.views.kv("rtc_sessions", { bindOnly: true });
} else {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstream } = await import("@nats-io/jetstream");
  const { Kvm } = await import("@nats-io/kv");
  nc = await connect(opts);
  js = jetstream(nc);
  openSessions = () => new Kvm(js).open("rtc_sessions");
}
logStatus().catch(() => {});
step = "RTC_EVENTS consumer";

// Session events: an ordered consumer on RTC_EVENTS from the start.
const events = [];
const lastSeq = new Map(); // room -> last seq (docs/events.md "Ordering")
// nats.js 2 names the filter filterSubjects and starts at stream sequence 1
// by default (it refuses deliver_policy "all" with its start sequence).
const consumerOpts = env.NATSJS === "2"
  ? { filterSubjects: ["rtc.session.>"] }
  : { filter_subjects: ["rtc.session.>"], deliver_policy: "all" };
const consumer = await js.consumers.get("RTC_EVENTS", consumerOpts);
step = "RTC_EVENTS consume";
const msgs = await consumer.consume();
const eventsDone = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`only ${events.length} of ${expectEvents} events within ${timeoutMs} ms`)), timeoutMs);
  (async () => {
    for await (const m of msgs) {
      const ev = decode(m.data);
      const what = `event ${m.seq}`;
      checkFields(what, ev, eventFields);
      if (ev.member !== null) checkMember(`${what} member`, ev.member);
      const headerVersion = m.headers?.get("Rtc-Schema-Version") ?? "";
      if (headerVersion !== "" && headerVersion !== String(ev.v)) {
        problems.push(`${what}: Rtc-Schema-Version ${headerVersion}, v ${ev.v}`);
      }
      if (m.headers?.get("Nats-Msg-Id") !== ev.id) problems.push(`${what}: Nats-Msg-Id is not the id`);
      // rtc.session.<appTok>.<roomTok>.<callTok>.<kind>
      const t = m.subject.split(".");
      if (t.length !== 6 || parseToken(t[2]) !== ev.application || parseToken(t[3]) !== ev.room_id ||
        parseToken(t[4]) !== ev.call_id || t[5] !== ev.kind) {
        problems.push(`${what}: subject ${m.subject} does not name the event`);
      }
      const last = lastSeq.get(ev.room_id);
      if (last !== undefined && ev.seq !== last + 1) problems.push(`${what}: seq ${ev.seq} after ${last}`);
      lastSeq.set(ev.room_id, ev.seq);
      events.push({ stream_seq: m.seq, subject: m.subject, header_version: headerVersion, event: ev });
      if (events.length >= expectEvents) break;
    }
    clearTimeout(timer);
    resolve();
  })().catch(reject);
});
step = "RTC_EVENTS messages";
await eventsDone;
msgs.stop();
step = "rtc_sessions";

// Live sessions: a watch of every key of rtc_sessions. Three-token keys are
// sessions, four-token keys members of large sessions.
const kv = await openSessions();
const sessionsByKey = new Map();
const membersByKey = new Map(); // session key -> member token -> member
step = "rtc_sessions watch";
const watch = await kv.watch({ key: ">" });
const initialDone = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`the watch did not deliver the current values within ${timeoutMs} ms`)), timeoutMs);
  (async () => {
    for await (const e of watch) {
      const parts = e.key.split(".");
      const put = e.operation === "PUT";
      if (parts.length === 4) {
        const sk = parts.slice(0, 3).join(".");
        if (!membersByKey.has(sk)) membersByKey.set(sk, new Map());
        if (put) {
          const lm = decode(e.value);
          checkFields(`member key ${e.key}`, lm, ["v", "member"]);
          checkMember(`member key ${e.key}`, lm.member);
          membersByKey.get(sk).set(parts[3], lm.member);
        } else {
          membersByKey.get(sk).delete(parts[3]);
        }
      } else if (parts.length === 3) {
        if (put) {
          const s = decode(e.value);
          checkFields(`session ${e.key}`, s, sessionFields);
          for (const m of s.members ?? []) checkMember(`session ${e.key} member`, m);
          if (parseToken(parts[0]) !== s.application || parseToken(parts[1]) !== s.room_id || parseToken(parts[2]) !== s.call_id) {
            problems.push(`session ${e.key}: the key does not name the session`);
          }
          sessionsByKey.set(e.key, s);
        } else {
          sessionsByKey.delete(e.key);
        }
      }
      if (e.delta === 0) break; // the current values are all delivered
    }
    clearTimeout(timer);
    resolve();
  })().catch(reject);
});
step = "rtc_sessions values";
await initialDone;
watch.stop();
step = "output";

const byMemberOrder = (a, b) => (a.joined_at - b.joined_at) || cmp(a.user_id, b.user_id) ||
  cmp(a.device_id, b.device_id) || cmp(a.membership_id, b.membership_id);
function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

const sessions = [];
for (const key of [...sessionsByKey.keys()].sort()) {
  const s = sessionsByKey.get(key);
  if (s.members_in_keys) {
    s.members = [...(membersByKey.get(key)?.values() ?? [])].sort(byMemberOrder);
  }
  sessions.push({ key, session: s });
}

process.stdout.write(JSON.stringify({ events, sessions, problems }) + "\n");
clearTimeout(watchdog);
process.exit(0);
