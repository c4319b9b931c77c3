// Runs docs/client/watch-scoreboard.mjs for tests/docs/test_js_client.py: one JSON line on
// stdout per callback; a line "stop" on stdin calls stop() and lets the process end.
// Arguments: URL [TOKEN [FRESH_TOKEN]] (FRESH_TOKEN: what refreshToken() answers).
import { watchScoreboard } from "../../docs/client/watch-scoreboard.mjs";

const [url, token = "", fresh = ""] = process.argv.slice(2);
const emit = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const watcher = watchScoreboard(url, {
  token: token || null,
  refreshToken: fresh
    ? async () => {
        emit({ event: "refresh" });
        return fresh;
      }
    : null,
  onBoard: (board) => emit({ event: "board", board }),
  onStatus: (status) => emit({ event: "status", status }),
  minDelayMs: 20,
  maxDelayMs: 200,
});
process.stdin.setEncoding("utf8");
process.stdin.on("data", (data) => {
  if (data.includes("stop")) {
    watcher.stop();
    emit({ event: "stopped" });
    process.stdin.destroy(); // nothing else keeps the process alive
  }
});
