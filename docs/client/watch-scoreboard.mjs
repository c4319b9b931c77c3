// Keeps `board` (an array of {user_id, username, score}, best first) equal to the server's,
// across reconnects. An ES module: import { watchScoreboard } from "./watch-scoreboard.mjs".
//
//   const watcher = watchScoreboard("wss://scores.example.com/ws/scoreboard", {
//     onBoard: (board) => render(board),  // the whole board after every change
//     token: playerJwt,                   // optional; required if the server requires auth
//     refreshToken: async () => fetchNewJwt(), // optional: a fresh token, see below
//     onStatus: (status) => showStatus(status), // optional: "connecting", "open", "lost"
//   });
//   watcher.stop();                       // close, and never reconnect
//
// A lost connection (a close, or an error: Node reports a failed connection with "error"
// alone, browsers with "error" then "close") is retried once, after a jittered
// exponential backoff (full jitter, from minDelayMs doubling up to maxDelayMs). Before a
// retry, refreshToken() is awaited when the token expires within a minute, or when the
// last attempt failed before it opened: a WebSocket cannot see why an upgrade failed, so
// the server may have refused the token (once per such streak, until a connection opens).
export function watchScoreboard(url, options) {
  const { onBoard, refreshToken = null, onStatus = () => {} } = options;
  const minDelay = options.minDelayMs ?? 500;
  const maxDelay = options.maxDelayMs ?? 30000;
  let token = options.token ?? null;
  let epoch = null, version = null, board = [];
  let ws = null, timer = null, attempt = 0, stopped = false;
  let failedBeforeOpen = false, refreshedSinceOpen = false;

  function apply(msg) {
    if (msg.event === "snapshot" || msg.event === "update") {
      board = msg.top_scores;
    } else if (msg.event === "delta") {
      if (msg.epoch !== epoch || msg.version !== version + 1) return ws.close(); // resume
      const gone = new Set(msg.removed);
      for (const row of msg.changed) gone.add(row.user_id);
      const byRank = new Map();
      board.forEach((row, i) => { if (!gone.has(row.user_id)) byRank.set(i + 1, row); });
      for (const { rank, user_id, username, score } of msg.changed) {
        byRank.set(rank, { user_id, username, score });
      }
      board = [...byRank.keys()].sort((a, b) => a - b).map((rank) => byRank.get(rank));
    } else if (msg.event === "resumed") {
      return; // the missed deltas follow
    } else {
      return ws.close(); // an event this client does not know: start over from a snapshot
    }
    epoch = msg.epoch;
    version = msg.version;
    onBoard(board);
  }

  function expiresSoon() {
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).exp * 1000 < Date.now() + 60000;
    } catch {
      return false; // not a JWT we can read: let the server judge it
    }
  }

  function retry() {
    const delay = Math.random() * Math.min(maxDelay, minDelay * 2 ** attempt);
    attempt += 1;
    timer = setTimeout(connect, delay);
  }

  async function connect() {
    timer = null;
    if (token && refreshToken && (expiresSoon() || (failedBeforeOpen && !refreshedSinceOpen))) {
      try {
        token = await refreshToken();
        refreshedSinceOpen = true;
      } catch {
        if (!stopped) retry(); // keep the old token; ask again next time
        return;
      }
      if (stopped) return;
    }
    const u = new URL(url);
    u.searchParams.set("format", "delta");
    if (epoch !== null) u.searchParams.set("since", `${epoch}:${version}`);
    if (token) u.searchParams.set("token", token);
    onStatus("connecting");
    const sock = (ws = new WebSocket(u));
    let opened = false;
    sock.onopen = () => {
      opened = true;
      refreshedSinceOpen = false;
      onStatus("open");
    };
    sock.onmessage = (e) => {
      if (sock !== ws) return;
      attempt = 0; // a server that accepts and then drops us at once still backs off
      apply(JSON.parse(e.data));
    };
    sock.onerror = sock.onclose = () => {
      if (sock !== ws) return; // this loss is handled already (error, then close)
      ws = null;
      failedBeforeOpen = !opened;
      sock.close();
      onStatus("lost");
      if (!stopped) retry();
    };
  }

  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      const sock = ws;
      ws = null;
      if (sock) sock.close(1000);
    },
  };
}
