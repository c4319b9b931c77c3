// Unit tests of handlers/web/scoreboard.js under Node's own test runner (node --test):
// the protocol's pure parts as data, and the connection's life with a fake WebSocket and
// fake timers (run by tests/handlers/web/test_client_module.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  EMPTY_VIEW,
  applyMessage,
  backoffDelay,
  connectScoreboard,
  expiresWithin,
  streamUrl,
} from "../../../handlers/web/scoreboard.js";

const row = (user_id, score) => ({ user_id, username: user_id.toUpperCase(), score });
const snapshot = (epoch, version, rows, extra = {}) => ({
  event: "snapshot", epoch, version, reason: "new", top_scores: rows, ...extra,
});

test("a snapshot then deltas keep the rows", () => {
  let { view } = applyMessage(EMPTY_VIEW, snapshot("e1", 3, [row("a", 5), row("b", 3)]));
  const delta = {
    event: "delta", epoch: "e1", version: 4,
    changed: [{ rank: 1, ...row("b", 9) }, { rank: 2, ...row("a", 5) }], removed: [],
  };
  const result = applyMessage(view, delta);
  assert.equal(result.board, true);
  assert.deepEqual(result.view.rows, [row("b", 9), row("a", 5)]);
  view = result.view;
  const gone = applyMessage(view, { event: "delta", epoch: "e1", version: 5, changed: [], removed: ["a"] });
  assert.deepEqual(gone.view.rows, [row("b", 9)]);
});

test("a delta out of order or of another epoch asks for a resync", () => {
  const { view } = applyMessage(EMPTY_VIEW, snapshot("e1", 3, []));
  for (const msg of [
    { event: "delta", epoch: "e1", version: 5, changed: [], removed: [] },
    { event: "delta", epoch: "e2", version: 4, changed: [], removed: [] },
  ]) {
    const result = applyMessage(view, msg);
    assert.equal(result.resync, true);
    assert.equal(result.view, view);
  }
  const unknown = applyMessage(view, { event: "something_new" }); // a newer server's
  assert.deepEqual(unknown, { view, board: false, resync: false, season: null, rank: null });
});

test("a season_started snapshot names the new season; rank events pass through", () => {
  const { view } = applyMessage(EMPTY_VIEW, snapshot("e1", 1, [row("a", 5)], { season: "2026-03-02" }));
  assert.equal(view.season, "2026-03-02");
  const started = applyMessage(view, snapshot("e2", 0, [], { season: "2026-03-03", reason: "season_started" }));
  assert.equal(started.season, "2026-03-03");
  assert.deepEqual(started.view.rows, []);
  const rank = { event: "rank", rank: 2, previous: 3, score: 5, total: 9, window: [] };
  assert.equal(applyMessage(view, rank).rank, rank);
});

test("the backoff is full jitter, doubling up to the cap", () => {
  assert.equal(backoffDelay(0, 500, 30000, 0.5), 250);
  assert.equal(backoffDelay(3, 500, 30000, 1), 4000);
  assert.equal(backoffDelay(20, 500, 30000, 1), 30000);
  assert.equal(backoffDelay(3, 500, 30000, 0), 0);
});

test("the stream's URL names the board, period, position and watch", () => {
  const view = { epoch: "e1", version: 7, season: null, rows: [] };
  const url = new URL(
    streamUrl("https://scores.example.com", { board: "kills", period: "daily", token: "t", watch: true, window: 3, view }),
  );
  assert.equal(url.origin, "wss://scores.example.com");
  assert.equal(url.pathname, "/ws/boards/kills");
  assert.deepEqual(Object.fromEntries(url.searchParams), {
    format: "delta", period: "daily", since: "e1:7", token: "t", watch: "me", window: "3",
  });
  const plain = new URL(streamUrl("http://localhost:8000", { view: EMPTY_VIEW }));
  assert.equal(plain.toString(), "ws://localhost:8000/ws/scoreboard?format=delta");
});

test("a token's expiry is read from its payload", () => {
  const jwt = (exp) => `h.${btoa(JSON.stringify({ exp })).replace(/=+$/, "")}.s`;
  assert.equal(expiresWithin(jwt(100), 60000, 50000), true);
  assert.equal(expiresWithin(jwt(1000), 60000, 50000), false);
  assert.equal(expiresWithin("not a jwt", 60000, 0), false);
});

class FakeSocket {
  static made = [];
  constructor(url) {
    this.url = url;
    this.closed = null;
    this.readyState = 0;
    this.sent = []; // what the client sent, parsed
    FakeSocket.made.push(this);
  }
  close(code) {
    this.closed = code ?? 1005;
    this.readyState = 3;
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  open() { this.readyState = 1; this.onopen(); }
  push(msg) { this.onmessage({ data: JSON.stringify(msg) }); } // from the server
  drop(code = 1006) { this.readyState = 3; this.onclose({ code }); }
}

// Let pending promises (a refreshToken() call and what follows it) run.
const settle = () => new Promise((resolve) => setImmediate(resolve));

function harness(extra = {}) {
  FakeSocket.made = [];
  const timers = [];
  const states = [];
  const boards = [];
  const tokenEvents = [];
  const live = connectScoreboard({
    origin: "http://localhost:8000",
    WebSocketImpl: FakeSocket,
    setTimer: (fn, ms) => { timers.push({ fn, ms }); return timers.length; },
    clearTimer: () => {},
    random: () => 1,
    onState: (s) => states.push(s),
    onBoard: (b) => boards.push(b.rows),
    onTokenEvent: (msg) => tokenEvents.push(msg),
    ...extra,
  });
  return { live, timers, states, boards, tokenEvents };
}

test("a dropped connection is retried with backoff and resumes where it was", async () => {
  const { live, timers, states, boards } = harness();
  const first = FakeSocket.made[0];
  first.open();
  first.push(snapshot("e1", 4, [row("a", 1)]));
  first.drop();
  assert.deepEqual(states, ["connecting", "live", "reconnecting"]);
  assert.equal(timers[0].ms, 500);
  await timers[0].fn();
  const second = FakeSocket.made[1];
  assert.equal(new URL(second.url).searchParams.get("since"), "e1:4");
  second.open();
  second.push({ event: "resumed", epoch: "e1", version: 4, missed: 1 });
  second.push({ event: "delta", epoch: "e1", version: 5, changed: [{ rank: 1, ...row("a", 2) }], removed: [] });
  assert.deepEqual(boards.at(-1), [row("a", 2)]);
  assert.equal(states.at(-1), "live");
  live.stop();
  assert.equal(second.closed, 1000);
  assert.equal(states.at(-1), "stopped");
});

test("an out-of-order delta reconnects; a stopped client never does", async () => {
  const { live, timers } = harness();
  const first = FakeSocket.made[0];
  first.open();
  first.push(snapshot("e1", 1, []));
  first.push({ event: "delta", epoch: "e1", version: 3, changed: [], removed: [] });
  assert.notEqual(first.closed, null);
  assert.equal(timers.length, 1);
  live.stop();
  assert.equal(FakeSocket.made.length, 1);
});

test("a connection that fails before opening refreshes the token once", async () => {
  let refreshed = 0;
  const { timers } = harness({
    token: "old",
    refreshToken: async () => { refreshed += 1; return "new"; },
  });
  FakeSocket.made[0].drop(); // refused before it opened: perhaps the token
  await timers[0].fn();
  assert.equal(refreshed, 1);
  assert.equal(new URL(FakeSocket.made[1].url).searchParams.get("token"), "new");
  FakeSocket.made[1].drop(); // refused again: no second refresh until one opens
  await timers[1].fn();
  assert.equal(refreshed, 1);
});

test("failures back off further each time, and only a lasting connection starts over", async () => {
  let clock = 0;
  const retries = [];
  const { timers } = harness({ now: () => clock, onRetry: (r) => retries.push(r) });
  FakeSocket.made[0].drop(); // refused
  await timers[0].fn();
  FakeSocket.made[1].open();
  FakeSocket.made[1].push(snapshot("e1", 1, []));
  FakeSocket.made[1].drop(); // a snapshot, then dropped at once: still backing off
  await timers[1].fn();
  FakeSocket.made[2].drop();
  assert.deepEqual(timers.map((t) => t.ms), [500, 1000, 2000]);
  assert.deepEqual(retries.map((r) => r.failedBeforeOpen), [true, false, true]);
  await timers[2].fn();
  FakeSocket.made[3].open();
  clock += 10000; // open for the steady time: the next failure starts over
  FakeSocket.made[3].drop();
  assert.equal(timers[3].ms, 500);
});

test("an unknown event is ignored, not a reason to reconnect", () => {
  const { timers, boards } = harness();
  const ws = FakeSocket.made[0];
  ws.open();
  ws.push(snapshot("e1", 1, [row("a", 1)]));
  ws.push({ event: "something_new" });
  assert.equal(ws.closed, null);
  assert.equal(timers.length, 0);
  assert.deepEqual(boards, [[row("a", 1)]]);
});

test("stop() while a token refresh is pending opens nothing", async () => {
  let release;
  const pending = new Promise((resolve) => { release = resolve; });
  const { live, timers } = harness({ token: "old", refreshToken: () => pending });
  FakeSocket.made[0].drop(); // refused before opening: the next attempt refreshes first
  const attempt = timers[0].fn();
  live.stop();
  release("new");
  await attempt;
  assert.equal(FakeSocket.made.length, 1);
});

test("retryNow() skips the backoff's wait, and does nothing while connected", async () => {
  const { live, timers } = harness();
  FakeSocket.made[0].open();
  live.retryNow(); // connected: nothing to retry
  assert.equal(FakeSocket.made.length, 1);
  FakeSocket.made[0].drop();
  assert.equal(timers.length, 1);
  live.retryNow();
  assert.equal(FakeSocket.made.length, 2); // at once, not after the timer
  live.stop();
});

test("token_expiring sends a fresh token on the same socket, and reconnects use it", async () => {
  let refreshed = 0;
  const { timers } = harness({
    token: "old",
    refreshToken: async () => { refreshed += 1; return "new"; },
  });
  const ws = FakeSocket.made[0];
  ws.open();
  ws.push({ event: "token_expiring", in_s: 30 });
  ws.push({ event: "token_expiring", in_s: 30 }); // while the first refresh is in flight
  await settle();
  assert.equal(refreshed, 1);
  assert.deepEqual(ws.sent, [{ event: "refresh", token: "new" }]);
  assert.equal(FakeSocket.made.length, 1);
  ws.push({ event: "token_refreshed", expires_in_s: 3600 });
  ws.drop();
  await timers[0].fn();
  assert.equal(refreshed, 1); // the token was not refreshed again before reconnecting
  assert.equal(new URL(FakeSocket.made[1].url).searchParams.get("token"), "new");
});

test("a fresh token the server refuses is not kept for the next connection", async () => {
  const { timers } = harness({ token: "old", refreshToken: async () => "someone-else" });
  const ws = FakeSocket.made[0];
  ws.open();
  ws.push({ event: "token_expiring", in_s: 30 });
  await settle();
  assert.deepEqual(ws.sent, [{ event: "refresh", token: "someone-else" }]);
  ws.push({ event: "token_refused", error: "token_mismatch", message: "another player" });
  ws.drop();
  await timers[0].fn();
  assert.equal(new URL(FakeSocket.made[1].url).searchParams.get("token"), "old");
});

test("token_expiring without refreshToken, or with one that fails, sends nothing", async () => {
  const expiring = { event: "token_expiring", in_s: 30 };
  const plain = harness({ token: "old" });
  const quiet = FakeSocket.made[0];
  quiet.open();
  quiet.push(expiring);
  await settle();
  assert.deepEqual(quiet.sent, []);
  assert.deepEqual(plain.tokenEvents, [expiring]);
  plain.live.stop();

  let calls = 0;
  const { timers, boards, tokenEvents } = harness({
    token: "old",
    refreshToken: async () => { calls += 1; throw new Error("offline"); },
  });
  const ws = FakeSocket.made[0];
  ws.open();
  ws.push(snapshot("e1", 1, [row("a", 1)]));
  ws.push(expiring);
  await settle();
  assert.equal(calls, 1);
  assert.deepEqual(ws.sent, []);
  assert.deepEqual(tokenEvents, [expiring]);
  ws.push({ event: "delta", epoch: "e1", version: 2, changed: [{ rank: 1, ...row("a", 2) }], removed: [] });
  assert.deepEqual(boards.at(-1), [row("a", 2)]); // the stream goes on
  assert.equal(ws.closed, null);
  assert.equal(timers.length, 0);
});

test("a refresh that ends after its socket closed is neither sent nor kept", async () => {
  let release;
  const { timers } = harness({
    token: "old",
    refreshToken: () => new Promise((resolve) => { release = resolve; }),
  });
  const ws = FakeSocket.made[0];
  ws.open();
  ws.push({ event: "token_expiring", in_s: 30 });
  ws.drop();
  release("new");
  await settle();
  assert.deepEqual(ws.sent, []);
  await timers[0].fn();
  assert.equal(new URL(FakeSocket.made[1].url).searchParams.get("token"), "old");
});

test("the token events never resync or touch the board", async () => {
  const { timers, boards, tokenEvents } = harness({ token: "old", refreshToken: async () => "new" });
  const ws = FakeSocket.made[0];
  ws.open();
  ws.push(snapshot("e1", 1, [row("a", 1)]));
  const events = [
    { event: "token_expiring", in_s: 30 },
    { event: "token_refreshed", expires_in_s: 3600 },
    { event: "token_refused", error: "invalid_token", message: "bad signature" },
  ];
  for (const msg of events) ws.push(msg);
  await settle();
  assert.deepEqual(tokenEvents, events);
  assert.deepEqual(boards, [[row("a", 1)]]);
  assert.equal(ws.closed, null);
  assert.equal(timers.length, 0);
  ws.push({ event: "delta", epoch: "e1", version: 2, changed: [{ rank: 1, ...row("a", 3) }], removed: [] });
  assert.deepEqual(boards.at(-1), [row("a", 3)]); // the position was kept
});

test("a 4401 close (token expired) refreshes the token before the next connect", async () => {
  let refreshed = 0;
  let release;
  const { timers } = harness({
    token: "old", // not a JWT: its expiry cannot be read, so only the 4401 asks for a refresh
    refreshToken: () => { refreshed += 1; return new Promise((resolve) => { release = resolve; }); },
  });
  FakeSocket.made[0].open();
  FakeSocket.made[0].drop(1006); // an ordinary loss after opening: no refresh
  await timers[0].fn();
  assert.equal(refreshed, 0);
  FakeSocket.made[1].open();
  FakeSocket.made[1].drop(4401);
  assert.equal(timers.length, 2); // retried after the backoff, like any loss
  const attempt = timers[1].fn();
  assert.equal(refreshed, 1);
  assert.equal(FakeSocket.made.length, 2); // waiting for the fresh token
  release("new");
  await attempt;
  assert.equal(new URL(FakeSocket.made[2].url).searchParams.get("token"), "new");
});
