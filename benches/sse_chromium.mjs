// A real EventSource (headless Chromium) on quiesce's /events through SIGHUP restarts.
//
//   node --experimental-websocket benches/sse_chromium.mjs BIN PORT [RESTARTS=3] [DRAIN_RETRY=500ms..3s]
//
// Starts BIN on 127.0.0.1:PORT and Chromium (`chromium --headless`, DevTools on PORT+1), opens
// a page from quiesce itself (same origin: /events needs no CORS) whose EventSource logs every
// open, message (with lastEventId), shutdown event and error. Sends SIGHUP to the serving
// process RESTARTS times, 6 s apart, then prints, per restart, the shutdown event's id, the
// ids on either side of the reconnection, and the gap from the shutdown event to the next
// open and to the next message; and whether the ids ran on with nothing lost or repeated
// across every restart. Needs Node 20+ (its WebSocket behind --experimental-websocket).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [bin, portText, restartsText = "3", drainRetry = "500ms..3s"] = process.argv.slice(2);
if (!bin || !portText) {
    console.error("usage: sse_chromium.mjs BIN PORT [RESTARTS] [DRAIN_RETRY]");
    process.exit(2);
}
const port = Number(portText);
const devtools = port + 1;
const restarts = Number(restartsText);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function servingPid() {
    try {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const m = text.match(/quiesce_info\{[^}]*pid="(\d+)"/);
        return m ? Number(m[1]) : null;
    } catch {
        return null;
    }
}

async function until(what, cond, ms = 20000) {
    const end = Date.now() + ms;
    for (;;) {
        const value = await cond();
        if (value) return value;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await sleep(50);
    }
}

const server = spawn(bin, ["--addr", `127.0.0.1:${port}`, "--sse-drain-retry", drainRetry, "-q"], {
    stdio: ["ignore", "ignore", "inherit"],
});
const profile = mkdtempSync(join(tmpdir(), "sse-chromium-"));
const chromium = spawn(
    "chromium",
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        `--user-data-dir=${profile}`,
        `--remote-debugging-port=${devtools}`,
        "about:blank",
    ],
    { stdio: ["ignore", "ignore", "ignore"] },
);
const pids = [];

try {
    pids.push(await until("quiesce", servingPid));
    await until("chromium", async () => {
        try {
            return (await fetch(`http://127.0.0.1:${devtools}/json/version`)).ok;
        } catch {
            return false;
        }
    });
    const target = await (
        await fetch(`http://127.0.0.1:${devtools}/json/new?http://127.0.0.1:${port}/page`, { method: "PUT" })
    ).json();
    const ws = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
    });
    let nextId = 1;
    const waiting = new Map();
    ws.onmessage = (m) => {
        const msg = JSON.parse(m.data);
        if (msg.id && waiting.has(msg.id)) {
            waiting.get(msg.id)(msg);
            waiting.delete(msg.id);
        }
    };
    const evaluate = (expression) =>
        new Promise((resolve) => {
            const id = nextId++;
            waiting.set(id, (msg) => resolve(msg.result?.result?.value));
            ws.send(JSON.stringify({ id, method: "Runtime.evaluate", params: { expression, returnByValue: true } }));
        });
    await until("the page", async () => (await evaluate("document.readyState")) === "complete");
    await evaluate(`
        window.log = [];
        const note = (kind, e) => log.push({ t: performance.now(), kind, id: e.lastEventId ?? null, data: e.data ?? null });
        const es = new EventSource('/events?every=200ms');
        es.onopen = (e) => note('open', e);
        es.onmessage = (e) => note('message', e);
        es.addEventListener('shutdown', (e) => note('shutdown', e));
        es.onerror = (e) => note('error', e);
        true`);
    await sleep(3000);
    for (let r = 1; r <= restarts; r++) {
        const old = pids[pids.length - 1];
        process.kill(old, "SIGHUP");
        const next = await until("the new process", async () => {
            const pid = await servingPid();
            return pid && pid !== old ? pid : null;
        });
        pids.push(next);
        await sleep(6000);
    }
    const log = await evaluate("window.log");
    ws.close();

    // The ids of the messages must run 1, 2, 3, ... across every reconnection.
    const ids = log.filter((e) => e.kind === "message").map((e) => Number(e.id));
    const lost = ids.reduce((n, id, i) => n + (i > 0 && id > ids[i - 1] + 1 ? id - ids[i - 1] - 1 : 0), 0);
    const repeated = ids.filter((id, i) => i > 0 && id <= ids[i - 1]).length;
    const rows = [];
    log.forEach((e, i) => {
        if (e.kind !== "shutdown") return;
        const before = log.slice(0, i).filter((x) => x.kind === "message").pop();
        const after = log.slice(i + 1);
        const open = after.find((x) => x.kind === "open");
        const message = after.find((x) => x.kind === "message");
        const errors = after.slice(0, after.indexOf(open) >= 0 ? after.indexOf(open) : after.length);
        rows.push({
            shutdown_id: Number(e.id),
            last_before: before ? Number(before.id) : null,
            first_after: message ? Number(message.id) : null,
            errors_before_reopen: errors.filter((x) => x.kind === "error").length,
            shutdown_to_open_ms: open ? Math.round(open.t - e.t) : null,
            last_message_to_next_ms: before && message ? Math.round(message.t - before.t) : null,
        });
    });
    console.log(
        JSON.stringify(
            {
                drain_retry: drainRetry,
                restarts,
                pids,
                messages: ids.length,
                first_id: ids[0],
                last_id: ids[ids.length - 1],
                lost,
                repeated,
                opens: log.filter((e) => e.kind === "open").length,
                reconnections: rows,
            },
            null,
            1,
        ),
    );
} finally {
    chromium.kill("SIGTERM");
    const last = pids[pids.length - 1] ?? server.pid;
    try {
        process.kill(last, "SIGTERM");
    } catch {}
    await sleep(1000);
    rmSync(profile, { recursive: true, force: true });
}
