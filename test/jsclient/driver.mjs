// One simulated Element Call device: matrix-js-sdk's own MatrixRTCSession
// joined to a room's call, driven by the Go test through a line protocol.
//
// Configuration: the environment variable JSCLIENT_CONFIG, a JSON object
// {hs, user, password, device, room, via, expiryMs, headroomMs, intent,
// observe} (observe: join the room but not the call).
//
// Standard input, one command a line:
//   probe [TAG]    report session.memberships as js-sdk computes them
//   leave          leaveRoomSession() (hang up: sends the empty membership)
//   intent INTENT  updateCallIntent(INTENT)
//   leave-room     leave the Matrix room (m.room.member leave) while in the call
//   join-room      join the room again (after the test re-invited the user)
//   quit           stopClient() and exit
//
// Standard output: one JSON object a line, each with "ev": "ready" once the
// client has joined the call and sees its own membership, then one reply per
// command ("probe", "ok" or "error", with "cmd"). Everything the SDK logs goes
// to standard error, so standard output carries only the protocol.

// The SDK logs through console.log/info/debug, which write to standard
// output: send them to standard error before anything is loaded.
for (const level of ["log", "info", "debug", "trace"]) {
    console[level] = (...args) => console.error(...args);
}

import { createInterface } from "node:readline";

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel(process.env.JSCLIENT_LOG_LEVEL || "info");

const cfg = JSON.parse(process.env.JSCLIENT_CONFIG || "{}");
for (const k of ["hs", "user", "password", "device", "room"]) {
    if (!cfg[k]) fail(`JSCLIENT_CONFIG has no ${k}`);
}

function emit(obj) {
    process.stdout.write(JSON.stringify({ ...obj, now: Date.now() }) + "\n");
}

function fail(msg) {
    console.error(`driver: ${msg}`);
    process.exit(2);
}

function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Log in with the device id the test chose (the user was registered by the
// test with the homeserver's shared secret).
const login = await withTimeout(
    sdk.createClient({ baseUrl: cfg.hs }).loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: cfg.user },
        password: cfg.password,
        device_id: cfg.device,
    }),
    30_000,
    "login",
);
const client = sdk.createClient({
    baseUrl: cfg.hs,
    accessToken: login.access_token,
    userId: login.user_id,
    deviceId: login.device_id,
});

const joinOpts = cfg.via ? { viaServers: [cfg.via] } : {};
await withTimeout(client.joinRoom(cfg.room, joinOpts), 30_000, "join the room");

const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "PREPARED" || state === "SYNCING") resolve();
        if (state === "ERROR") console.error("driver: sync error", data?.error);
    });
    setTimeout(() => reject(new Error("initial sync: not prepared within 30 s")), 30_000);
});
await client.startClient({ initialSyncLimit: 20 });
await prepared;

async function waitFor(cond, ms, what) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

const room = await waitFor(() => client.getRoom(cfg.room), 30_000, "room in the client's store");
const session = client.matrixRTC.getRoomSession(room);
await session.initialMembershipCalculated;

const mine = (m) => m.userId === login.user_id && m.deviceId === login.device_id;

if (cfg.observe) {
    // An observer: a member of the room that is in no call, reporting what
    // js-sdk computes for the room.
    emit({ ev: "ready", user_id: login.user_id, device_id: login.device_id, event_id: null });
} else {
    // A focus as Element Call announces it; there is no SFU (the service
    // never contacts it).
    session.joinRoomSession(
        [{ type: "livekit", livekit_service_url: "https://sfu.example", livekit_alias: cfg.room }],
        undefined,
        {
            manageMediaKeys: false,
            callIntent: cfg.intent || "video",
            ...(cfg.expiryMs ? { membershipEventExpiryMs: cfg.expiryMs } : {}),
            ...(cfg.headroomMs ? { membershipEventExpiryHeadroomMs: cfg.headroomMs } : {}),
        },
    );
    const own = await waitFor(() => session.memberships.find(mine), 30_000, "own membership in session.memberships");
    emit({ ev: "ready", user_id: login.user_id, device_id: login.device_id, event_id: own.eventId });
}

function view(m) {
    return {
        user_id: m.userId,
        device_id: m.deviceId,
        created_ts: m.createdTs(),
        expires_ts: m.getAbsoluteExpiry() ?? null,
        event_id: m.eventId ?? null,
        call_intent: m.callIntent ?? null,
        membership_id: m.membershipID ?? null,
    };
}

const commands = {
    async probe(tag) {
        emit({
            ev: "probe",
            tag: tag ?? "",
            joined: session.isJoined(),
            room_membership: room.getMyMembership(),
            memberships: session.memberships.map(view),
        });
    },
    async leave() {
        const done = await withTimeout(session.leaveRoomSession(10_000), 15_000, "leaveRoomSession");
        if (!done) throw new Error("leaveRoomSession did not send the leave in time");
    },
    async intent(value) {
        if (!value) throw new Error("intent needs a value");
        const before = session.memberships.find(mine)?.eventId;
        await withTimeout(session.updateCallIntent(value), 15_000, "updateCallIntent");
        // Reply once the client's own view has the new membership event.
        await waitFor(
            () => {
                const m = session.memberships.find(mine);
                return m && m.eventId !== before && m.callIntent === value;
            },
            15_000,
            "own membership with the new intent",
        );
    },
    async "leave-room"() {
        await withTimeout(client.leave(cfg.room), 15_000, "leave the room");
        await waitFor(() => room.getMyMembership() === "leave", 15_000, "own room membership leave");
    },
    async "join-room"() {
        await withTimeout(client.joinRoom(cfg.room, joinOpts), 15_000, "join the room again");
        await waitFor(() => room.getMyMembership() === "join", 15_000, "own room membership join");
    },
    async quit() {
        client.stopClient();
        emit({ ev: "ok", cmd: "quit" });
        process.exit(0);
    },
};

// Commands run one at a time, in order.
let queue = Promise.resolve();
createInterface({ input: process.stdin }).on("line", (line) => {
    const [cmd, ...args] = line.trim().split(/\s+/);
    if (!cmd) return;
    queue = queue.then(async () => {
        const run = commands[cmd];
        if (!run) {
            emit({ ev: "error", cmd, error: "unknown command" });
            return;
        }
        try {
            await run(...args);
            if (cmd !== "probe") emit({ ev: "ok", cmd });
        } catch (e) {
            emit({ ev: "error", cmd, error: String(e?.stack ?? e) });
        }
    });
});
// The test closing standard input ends the client like quit (a crash is
// simulated with SIGKILL instead).
process.stdin.on("end", () => {
    queue = queue.then(() => commands.quit());
});
