// Runs the client module (handlers/web/scoreboard.js) for tests/docs/test_js_client.py:
// one JSON line on stdout per callback; a line "stop" on stdin calls stop() and lets the
// process end. One argument, JSON: {origin, token, fresh, watch}; `fresh` (a list, or
// absent) holds what refreshToken() answers, in order (it throws once they are used up);
// without it, no refreshToken is given.
import { connectScoreboard } from "../../handlers/web/scoreboard.js";

const { origin, token = null, fresh = null, watch = false } = JSON.parse(process.argv[2]);
const emit = (line) => process.stdout.write(JSON.stringify(line) + "\n");

// Node's WebSocket, reporting each connection made and how it closed.
class ReportingWebSocket extends WebSocket {
  constructor(url) {
    super(url);
    emit({ event: "socket" });
    this.addEventListener("close", (e) => emit({ event: "close", code: e.code }));
  }
}

const live = connectScoreboard({
  origin,
  token,
  watch,
  refreshToken: fresh
    ? async () => {
        emit({ event: "refresh" });
        if (fresh.length === 0) throw new Error("no fresh token left");
        return fresh.shift();
      }
    : null,
  onBoard: ({ rows }) => emit({ event: "board", rows }),
  onState: (state) => emit({ event: "state", state }),
  onRetry: ({ failedBeforeOpen }) => emit({ event: "retry", failedBeforeOpen }),
  onTokenEvent: (msg) => emit({ event: "token", token: msg.event }),
  WebSocketImpl: ReportingWebSocket,
  minDelayMs: 20,
  maxDelayMs: 200,
});
process.stdin.setEncoding("utf8");
process.stdin.on("data", (data) => {
  if (data.includes("stop")) {
    live.stop(); // reports the state "stopped"
    process.stdin.destroy(); // nothing else keeps the process alive
  }
});
