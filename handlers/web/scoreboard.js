// The scoreboard's live client: an ES module, no build step, no dependencies.
//
//   import { connectScoreboard } from "https://scores.example.com/client/scoreboard.js";
//   const live = connectScoreboard({
//     origin: "https://scores.example.com", // default: the page's own origin
//     board: "kills", period: "weekly",      // default: the original /ws/scoreboard stream
//     token: playerJwt,                      // optional: with watch, the player's rank too
//     watch: true, window: 2,                // the player's rank events (needs a token)
//     refreshToken: async () => newJwt(),    // optional: a fresh token (see below)
//     onBoard: ({ rows, season }) => render(rows),
//     onState: (state) => show(state),       // "connecting" | "live" | "reconnecting" | "stopped"
//     onRank: (event) => showRank(event),    // {rank, previous, score, total, window}
//     onSeason: (season) => newSeason(season),
//     onRetry: ({ attempt, failedBeforeOpen }) => {}, // each failure, before its retry
//     onTokenEvent: (msg) => {},             // token_expiring, token_refreshed, token_refused
//   });
//   live.retryNow();                       // skip the backoff's wait (back online)
//   live.stop();
//
// The protocol is docs/protocol.md's: the delta format, resumed with `since` after a
// reconnect; a lost connection is retried after a jittered exponential backoff (full
// jitter, minDelayMs doubling up to maxDelayMs). Before a retry, refreshToken() is awaited
// when the token expires within a minute, or once after an attempt failed before opening
// (a WebSocket cannot see why an upgrade failed: the server may have refused the token),
// or after the server closed with 4401 (token expired). On a live connection, the server's
// token_expiring has refreshToken() awaited (one call at a time per connection) and the new
// token sent as {"event":"refresh","token":…}; once the server answers token_refreshed it
// is kept for later reconnects (a token_refused one is dropped). If that
// call throws, nothing is sent: the server closes with 4401 and the retry refreshes first.
// onTokenEvent gets token_expiring, token_refreshed and token_refused as they come; they
// carry no epoch or version and never touch the board.
// The pure parts (applyMessage, backoffDelay, streamUrl, expiresWithin) are exported and
// tested on their own (tests/handlers/web/scoreboard.test.mjs).

// The token's events: not board messages, handled before applyMessage (never a resync).
const TOKEN_EVENTS = new Set(["token_expiring", "token_refreshed", "token_refused"]);
// The close code of a connection whose token expired unrefreshed.
const TOKEN_EXPIRED = 4401;
// WebSocket.OPEN.
const OPEN = 1;

/** The board as the client holds it: the stream's position, its season and rows. */
export const EMPTY_VIEW = Object.freeze({ epoch: null, version: null, season: null, rows: [] });

/**
 * One message applied to `view`. Returns `{ view, board, resync, season, rank }`:
 * `board` when the rows changed; `resync` when the stream is out of order (the caller
 * reconnects, resuming or getting a snapshot); `season` when a new season started;
 * `rank` for a rank event. An event it does not know (a newer server's) changes nothing.
 */
export function applyMessage(view, msg) {
  const out = { view, board: false, resync: false, season: null, rank: null };
  if (msg.event === "rank") {
    out.rank = msg;
    return out;
  }
  if (msg.event === "resumed") return out; // the missed deltas follow
  let rows;
  if (msg.event === "snapshot" || msg.event === "update") {
    rows = msg.top_scores.map(({ user_id, username, score }) => ({ user_id, username, score }));
  } else if (msg.event === "delta") {
    if (msg.epoch !== view.epoch || msg.version !== view.version + 1) {
      out.resync = true;
      return out;
    }
    rows = applyDelta(view.rows, msg);
  } else {
    return out; // an event this client does not know (a newer server's): ignored
  }
  const season = msg.season ?? view.season;
  if (msg.reason === "season_started" || (view.season !== null && season !== view.season)) {
    out.season = season;
  }
  out.view = { epoch: msg.epoch, version: msg.version, season, rows };
  out.board = true;
  return out;
}

function applyDelta(rows, msg) {
  const gone = new Set(msg.removed);
  for (const row of msg.changed) gone.add(row.user_id);
  const byRank = new Map();
  rows.forEach((row, i) => {
    if (!gone.has(row.user_id)) byRank.set(i + 1, row);
  });
  for (const { rank, user_id, username, score } of msg.changed) {
    byRank.set(rank, { user_id, username, score });
  }
  return [...byRank.keys()].sort((a, b) => a - b).map((rank) => byRank.get(rank));
}

/** The wait before retry number `attempt` (0-based): full jitter, `draw` in [0, 1). */
export function backoffDelay(attempt, minMs, maxMs, draw) {
  return draw * Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
}

/** The stream's URL: the board's (or the original one), the delta format, resuming. */
export function streamUrl(origin, { board, period, token, watch, window, view }) {
  const path = board ? `/ws/boards/${encodeURIComponent(board)}` : "/ws/scoreboard";
  const url = new URL(path, origin.replace(/^http/, "ws"));
  url.searchParams.set("format", "delta");
  if (board && period) url.searchParams.set("period", period);
  if (view && view.epoch !== null) url.searchParams.set("since", `${view.epoch}:${view.version}`);
  if (token) url.searchParams.set("token", token);
  if (watch && token) {
    url.searchParams.set("watch", "me");
    if (window !== undefined) url.searchParams.set("window", String(window));
  }
  return url.toString();
}

/** Whether a JWT expires within `ms` of `now` (false for one this client cannot read). */
export function expiresWithin(token, ms, now) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).exp * 1000 < now + ms;
  } catch {
    return false;
  }
}

/**
 * Connect, keep the board current across reconnects, and call back; see the top of
 * this file. `WebSocketImpl`, `setTimer`, `clearTimer`, `random` and `now` are for tests.
 */
export function connectScoreboard(options) {
  const {
    origin = globalThis.location ? globalThis.location.origin : undefined,
    board = null,
    period = null,
    watch = false,
    window,
    refreshToken = null,
    onBoard = () => {},
    onState = () => {},
    onRank = () => {},
    onSeason = () => {},
    onRetry = () => {},
    onTokenEvent = () => {},
    minDelayMs = 500,
    steadyMs = 10000,
    maxDelayMs = 30000,
    WebSocketImpl = globalThis.WebSocket,
    setTimer = (fn, ms) => setTimeout(fn, ms),
    clearTimer = (id) => clearTimeout(id),
    random = Math.random,
    now = Date.now,
  } = options;
  let token = options.token ?? null;
  let view = EMPTY_VIEW;
  let socket = null;
  let timer = null;
  let attempt = 0;
  let stopped = false;
  let failedBeforeOpen = false;
  let refreshedSinceOpen = false;
  let tokenExpired = false; // the server closed with 4401: refresh before reconnecting
  let state = null;

  function setState(next) {
    if (next !== state) {
      state = next;
      onState(next);
    }
  }

  function retry() {
    setState("reconnecting");
    if (!stopped) onRetry({ attempt, failedBeforeOpen }); // every failure, not just the first
    if (stopped) return; // stopped from a callback
    timer = setTimer(connect, backoffDelay(attempt, minDelayMs, maxDelayMs, random()));
    attempt += 1;
  }

  async function connect() {
    timer = null;
    if (stopped) return;
    const stale = failedBeforeOpen && !refreshedSinceOpen;
    if (token && refreshToken && (expiresWithin(token, 60000, now()) || stale || tokenExpired)) {
      try {
        token = await refreshToken();
        refreshedSinceOpen = true;
        tokenExpired = false;
      } catch {
        if (!stopped) retry(); // keep the old token; ask again next time
        return;
      }
      if (stopped) return;
    }
    if (state === null) setState("connecting");
    const ws = new WebSocketImpl(streamUrl(origin, { board, period, token, watch, window, view }));
    socket = ws;
    let opened = false;
    let openedAt = 0;
    let refreshing = false; // a refreshToken() call for this socket is in flight
    let offered = null; // a fresh token sent on this socket, until the server answers
    ws.onopen = () => {
      if (ws !== socket) return;
      opened = true;
      openedAt = now();
      refreshedSinceOpen = false;
      setState("live");
    };
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      const msg = JSON.parse(event.data);
      if (TOKEN_EVENTS.has(msg.event)) {
        onTokenEvent(msg);
        if (msg.event === "token_expiring") refreshLive();
        // Keep a fresh token only once the server took it: a refused one is not reused.
        if (msg.event === "token_refreshed" && offered !== null) token = offered;
        if (msg.event === "token_refreshed" || msg.event === "token_refused") offered = null;
        return;
      }
      const result = applyMessage(view, msg);
      if (result.resync) {
        lost(ws);
        return;
      }
      view = result.view;
      if (result.season !== null) onSeason(result.season);
      if (result.board) onBoard({ rows: view.rows, season: view.season });
      if (result.rank !== null) onRank(result.rank);
    };
    ws.onerror = () => lost(ws);
    ws.onclose = (event) => lost(ws, event && event.code);
    // The server warned that the token expires: send it a fresh one on this socket.
    async function refreshLive() {
      if (refreshing || !token || !refreshToken) return;
      refreshing = true;
      let fresh;
      try {
        fresh = await refreshToken();
      } catch {
        return; // the server closes with 4401; the retry refreshes before reconnecting
      } finally {
        refreshing = false;
      }
      if (stopped || ws !== socket || ws.readyState !== OPEN) return;
      offered = fresh;
      ws.send(JSON.stringify({ event: "refresh", token: fresh }));
    }
    function lost(which, code) {
      if (which !== socket) return; // handled already (an error, then its close)
      socket = null;
      failedBeforeOpen = !opened;
      if (code === TOKEN_EXPIRED) tokenExpired = true;
      // The backoff starts over only after a connection that lasted: a server that takes
      // us and drops us at once (or a stream that keeps breaking) is still backed off.
      if (opened && now() - openedAt >= steadyMs) attempt = 0;
      which.close();
      if (!stopped) retry();
    }
  }

  connect();
  return {
    /** Close, and never reconnect. */
    stop() {
      stopped = true;
      if (timer !== null) clearTimer(timer);
      timer = null;
      const ws = socket;
      socket = null;
      if (ws) ws.close(1000);
      setState("stopped");
    },
    /** Retry at once if a retry is waiting out its backoff (the network is back). */
    retryNow() {
      if (stopped || timer === null) return;
      clearTimer(timer);
      connect();
    },
    /** The rows held now (best first). */
    get rows() {
      return view.rows;
    },
    /** "connecting", "live", "reconnecting" or "stopped". */
    get state() {
      return state;
    },
  };
}
