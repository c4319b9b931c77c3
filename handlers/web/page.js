// The live page (GET /): the board and period picker, the top N as a table, the
// connection's state, and with a token in the URL fragment (#token=...), the player's own
// rank and the players around them. Built on ./scoreboard.js; names are always text.
import { connectScoreboard, expiresWithin } from "./scoreboard.js";

const $ = (id) => document.getElementById(id);
const STATE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  stopped: "Offline",
};
const SUMMARY_EVERY_MS = 5000; // live changes are announced as a summary, at most this often
const MARK_MS = 1500; // how long a changed row stays marked
const REFUSALS_BEFORE_PUBLIC = 2; // failed attempts with a token before going on without

const query = new URLSearchParams(location.search);
// The player's token comes in the URL's fragment (never sent to a server); it is taken out
// of the address at once, so a copied or shared URL never carries it, and kept for this tab.
const TOKEN_KEY = "scoreboard.token";
let token = new URLSearchParams(location.hash.slice(1)).get("token");
if (token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, "", location.pathname + location.search);
} else {
  token = sessionStorage.getItem(TOKEN_KEY);
}
let live = null;
let shown = new Map(); // user_id -> "score|rank" as last shown, to mark what changed
const markedUntil = new Map(); // user_id -> when its row's mark ends (ms)
let unmarkTimer = null; // one timer for every mark: the earliest end
let lastSummary = 0;
let summaryTimer = null;
let latestRows = [];

if (query.get("embed") === "1") document.documentElement.classList.add("embed");

function say(state) {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = STATE_TEXT[state] ?? state;
}

function notice(text) {
  const el = $("notice");
  el.hidden = !text;
  el.textContent = text ?? "";
}

function cell(tag, text, className) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  el.textContent = text; // never HTML: a name is shown as the characters it is
  return el;
}

function rowOf(rank, entry, marked, isYou) {
  const tr = document.createElement("tr");
  tr.dataset.userId = entry.user_id;
  if (marked) tr.classList.add("changed");
  if (isYou) tr.classList.add("you");
  const th = cell("th", String(rank));
  th.scope = "row";
  const name = document.createElement("td");
  name.append(cell("bdi", entry.username)); // isolated: right-to-left names stay whole
  tr.append(th, name, cell("td", String(entry.score), "score"));
  return tr;
}

function renderBoard(rows) {
  const now = Date.now();
  const next = new Map();
  const fresh = [];
  rows.forEach((entry, i) => {
    const key = `${entry.score}|${i + 1}`;
    next.set(entry.user_id, key);
    if (shown.size > 0 && shown.get(entry.user_id) !== key) {
      markedUntil.set(entry.user_id, now + MARK_MS);
    }
    const marked = (markedUntil.get(entry.user_id) ?? 0) > now;
    fresh.push(rowOf(i + 1, entry, marked, false));
  });
  for (const userId of markedUntil.keys()) {
    if (!next.has(userId)) markedUntil.delete(userId); // left the table: no mark to end
  }
  $("rows").replaceChildren(...fresh);
  shown = next;
  armUnmark();
  announce(rows);
}

function armUnmark() {
  if (unmarkTimer !== null || markedUntil.size === 0) return;
  const first = Math.min(...markedUntil.values());
  unmarkTimer = setTimeout(unmark, Math.max(0, first - Date.now()));
}

function unmark() {
  // Each row's mark lasts MARK_MS from its own change, whatever renders came since.
  unmarkTimer = null;
  const now = Date.now();
  for (const [userId, end] of markedUntil) {
    if (end <= now) markedUntil.delete(userId);
  }
  for (const tr of $("rows").querySelectorAll("tr.changed")) {
    if (!markedUntil.has(tr.dataset.userId)) tr.classList.remove("changed");
  }
  armUnmark(); // the marks still running
}

function announce(rows) {
  // A polite summary, not every delta: at most one per SUMMARY_EVERY_MS, of the board as
  // it is when it is said.
  latestRows = rows;
  const write = () => {
    summaryTimer = null;
    lastSummary = Date.now();
    const leader = latestRows[0];
    $("summary").textContent = leader
      ? `Top scores updated: ${leader.username} leads with ${leader.score}.`
      : "The board is empty.";
  };
  if (summaryTimer !== null) return;
  const wait = Math.max(0, lastSummary + SUMMARY_EVERY_MS - Date.now());
  summaryTimer = setTimeout(write, wait);
}

function renderYou(event) {
  $("you").hidden = false;
  $("you-rank").textContent =
    event.rank === null
      ? "You are not ranked yet."
      : `Rank ${event.rank} of ${event.total}, score ${event.score}.`;
  const youId = event.window.find((r) => r.rank === event.rank)?.user_id;
  $("around-rows").replaceChildren(
    ...event.window.map((r) => rowOf(r.rank, r, false, r.user_id === youId)),
  );
}

function caption(board, period, season) {
  const title = board ? board.title : "Top scores";
  const when = period && period.name !== "all_time" ? ` — ${period.name} ${season ?? ""}` : "";
  $("caption").textContent = `${title}${when}`.trim();
}

function option(value, text) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = text;
  return el;
}

async function loadBoards() {
  try {
    const answer = await fetch("/api/boards", { headers: { Accept: "application/json" } });
    if (!answer.ok) return [];
    return (await answer.json()).boards;
  } catch {
    return [];
  }
}

function start(boards) {
  const boardId = query.get("board") ?? boards.find((b) => b.default)?.id ?? boards[0]?.id;
  const board = boards.find((b) => b.id === boardId) ?? boards[0];
  const periodName = query.get("period") ?? board?.periods[0]?.name;
  const period = board?.periods.find((p) => p.name === periodName) ?? board?.periods[0];
  const boardSelect = $("board");
  boardSelect.replaceChildren(...boards.map((b) => option(b.id, b.title)));
  if (board) boardSelect.value = board.id;
  $("period").replaceChildren(...(board?.periods ?? []).map((p) => option(p.name, p.name)));
  if (period) $("period").value = period.name;
  caption(board, period, period?.season?.id);

  if (token && expiresWithin(token, 0, Date.now())) {
    notice("Your session has expired: sign in again to see your rank. The board stays live.");
    forgetToken();
  }
  live = connectScoreboard({
    board: board?.id ?? null,
    period: period?.name ?? null,
    token,
    watch: Boolean(token),
    window: 2,
    onState: (state) => {
      say(state === "reconnecting" && navigator.onLine === false ? "offline" : state);
    },
    onRetry: ({ attempt, failedBeforeOpen }) => {
      // The token lapsed on a live connection (the server closed it, 4401): this page
      // has no way to a fresh one, so it goes on without, as at start.
      if (token && expiresWithin(token, 0, Date.now())) {
        notice("Your session has expired: sign in again to see your rank. The board stays live.");
        forgetToken();
        restart(boards);
        return;
      }
      // The server keeps refusing the connection before it opens, with a token (not one
      // it accepts): go on without it, the public board live.
      if (token && failedBeforeOpen && attempt >= REFUSALS_BEFORE_PUBLIC - 1) {
        notice("Your sign-in was not accepted: the board stays live without your rank.");
        forgetToken();
        restart(boards);
      }
    },
    onBoard: ({ rows, season }) => {
      renderBoard(rows);
      caption(board, period, season);
    },
    onSeason: () => {
      shown = new Map(); // a new season: nothing to mark as changed
    },
    onRank: renderYou,
  });
}

function forgetToken() {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("you").hidden = true;
}

function restart(boards) {
  if (live) live.stop();
  shown = new Map();
  start(boards);
}

function choose(boards) {
  const params = new URLSearchParams(location.search);
  params.set("board", $("board").value);
  const board = boards.find((b) => b.id === $("board").value);
  const period = board?.periods.some((p) => p.name === $("period").value)
    ? $("period").value
    : board?.periods[0]?.name;
  params.set("period", period);
  history.replaceState(null, "", `?${params}`);
  query.set("board", params.get("board"));
  query.set("period", period);
  restart(boards);
}

addEventListener("offline", () => {
  if ($("state").dataset.state !== "live") say("offline");
});
addEventListener("online", () => {
  if ($("state").dataset.state === "offline") say(live ? live.state : "connecting");
  if (live) live.retryNow(); // back online: no need to wait out the backoff
});

addEventListener("DOMContentLoaded", async () => {
  const boards = await loadBoards();
  $("board").addEventListener("change", () => choose(boards));
  $("period").addEventListener("change", () => choose(boards));
  start(boards);
});
