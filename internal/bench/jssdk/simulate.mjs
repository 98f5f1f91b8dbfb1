// The matrix-js-sdk side of the simulate comparison: reads the same
// JSON-lines trace of Matrix events as `rtcctl simulate` and, after every
// call-member or room-member event, recomputes the room's call memberships
// with js-sdk's own MatrixRTCSession.sessionMembershipsForSlot (which parses
// each member event with CallMembership.parseFromEvent and drops expired and
// non-joined ones), as a client does on every room state update, and writes
// one JSON line per membership that appeared or went. Date.now is the
// trace's clock (the latest received_at), as simulate's is.
//
// Usage: node simulate.mjs TRACE.jsonl > changes.jsonl
// The last line on standard error is {"events":N,"changes":M}.

// The SDK logs through console (its info lines about every membership
// would otherwise be most of the run's output): it is measured computing
// the memberships, not writing its logs.
for (const level of ["log", "info", "debug", "trace", "warn", "error"]) {
    console[level] = () => {};
}

import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";

const sdk = await import("matrix-js-sdk");
const { MatrixRTCSession } = await import("matrix-js-sdk/lib/matrixrtc/index.js");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel("warn");

let now = 0;
Date.now = () => now;

const callMemberType = "org.matrix.msc3401.call.member";
const slot = { application: "m.call", id: "ROOM" };
const opts = { listenForStickyEvents: false, listenForMemberStateEvents: true };

// One room as much of js-sdk's Room as MatrixRTCSession reads.
function newRoom(roomId) {
    const members = new Map(); // state key -> MatrixEvent
    const joined = new Set();
    const state = { getStateEvents: () => [...members.values()] };
    const timeline = { getState: () => state };
    return {
        roomId,
        members,
        joined,
        current: new Map(), // membership key -> event id
        getLiveTimeline: () => timeline,
        hasMembershipState: (user, membership) => membership === "join" && joined.has(user),
        _unstable_getStickyEvents: () => [],
    };
}

const rooms = new Map();
const out = [];
let events = 0;
let changes = 0;

function flush() {
    if (out.length > 0) {
        process.stdout.write(out.join(""));
        out.length = 0;
    }
}

const lines = createInterface({ input: createReadStream(process.argv[2]), crlfDelay: Infinity });
for await (const line of lines) {
    if (line.trim() === "") continue;
    const raw = JSON.parse(line);
    events++;
    now = Math.max(now, raw.received_at ?? raw.origin_server_ts);
    const { received_at, ...ev } = raw;
    let room = rooms.get(ev.room_id);
    if (!room) {
        room = newRoom(ev.room_id);
        rooms.set(ev.room_id, room);
    }
    if (ev.type === "m.room.member") {
        if (ev.content?.membership === "join") room.joined.add(ev.state_key);
        else room.joined.delete(ev.state_key);
    } else if (ev.type === callMemberType) {
        room.members.set(ev.state_key, new sdk.MatrixEvent(ev));
    } else {
        continue;
    }
    const memberships = await MatrixRTCSession.sessionMembershipsForSlot(room, slot, opts);
    const next = new Map();
    for (const m of memberships) {
        const key = `${m.userId}/${m.deviceId}/${m.createdTs()}`;
        next.set(key, m.eventId);
        if (!room.current.has(key)) {
            changes++;
            out.push(JSON.stringify({ kind: "member_joined", room_id: room.roomId, key, at: now }) + "\n");
        }
    }
    for (const key of room.current.keys()) {
        if (!next.has(key)) {
            changes++;
            out.push(JSON.stringify({ kind: "member_left", room_id: room.roomId, key, at: now }) + "\n");
        }
    }
    room.current = next;
    if (out.length >= 1024) flush();
}
flush();
process.stderr.write(JSON.stringify({ events, changes }) + "\n");
