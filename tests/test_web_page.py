"""The demo page's script (``GET /``) run in Node against scripted answers: non-JSON errors and
``Retry-After``. No Ray, no browser: the DOM is a stub of the few elements the script uses."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from slp_pipeline.serve_app import WEB_FILES

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (18+, for fetch/Response)")

# Answers are [status, headers, body]; the page's calls take them in order.
HARNESS = """
const answers = %s;
const calls = [];
const elements = {};
const element = (id) => elements[id] ??= {
  id, value: "", textContent: "", src: "", options: [], add(o) { this.options.push(o); },
};
element("text").value = "am tag"; element("language").value = "de";
element("signer").value = "default"; element("key").value = %s;
globalThis.document = {getElementById: element};
globalThis.Option = function (text, value) { this.text = text; this.value = value; };
globalThis.URL.createObjectURL = () => "blob:video";
globalThis.setTimeout = (f) => f();  // Retry-After waits are not slept in the test
globalThis.fetch = async (url, options = {}) => {
  calls.push({url, method: options.method || "GET", headers: options.headers || {}});
  const [status, headers, body] = answers.shift();
  return new Response(body, {status, headers});
};
%s
(async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));  // signer list
  const listed = element("status").textContent;
  await element("go").onclick();
  console.log(JSON.stringify({listed, status: element("status").textContent,
    src: element("video").src, calls, signers: element("signer").options.length}));
})();
"""
SIGNERS = [200, {"Content-Type": "application/json"}, '{"signers": [{"name": "default"}]}']
VIDEO = [200, {"Content-Type": "video/mp4"}, "mp4 bytes"]


def _run(answers: list, key: str = "") -> dict:
    script = WEB_FILES["app.js"].decode()
    code = HARNESS % (json.dumps(answers), json.dumps(key), script)
    done = subprocess.run([NODE, "-e", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_plain_text_error_is_shown_not_stuck_on_rendering() -> None:
    """The proxy's own 503 is plain text: ``r.json()`` threw and the page said "rendering..."
    forever."""
    busy = [503, {"Content-Type": "text/plain"}, "Service Unavailable"]
    out = _run([SIGNERS, busy])
    assert out["status"] == "error 503: Service Unavailable"
    assert len(out["calls"]) == 2  # no Retry-After: no retry


def test_json_errors_show_their_message() -> None:
    out = _run(
        [SIGNERS, [404, {"Content-Type": "application/json"}, '{"error": "unknown signer \'x\'"}']]
    )
    assert out["status"] == "unknown signer 'x'" and out["signers"] == 1


def test_busy_answers_are_retried_after_retry_after() -> None:
    busy = [503, {"Content-Type": "text/plain", "Retry-After": "2"}, "Service Unavailable"]
    busy_json = [503, {"Content-Type": "application/json", "Retry-After": "0"}, '{"error": "busy"}']
    out = _run([SIGNERS, busy, busy_json, VIDEO], key="secret-key-0123456789")
    assert out["status"] == "" and out["src"] == "blob:video"
    assert [c["url"] for c in out["calls"]] == ["/v1/signers"] + ["/v1/sign"] * 3
    assert out["calls"][-1]["headers"]["Authorization"] == "Bearer secret-key-0123456789"


def test_retries_give_up_after_four_tries() -> None:
    busy = [503, {"Content-Type": "application/json", "Retry-After": "1"}, '{"error": "busy"}']
    out = _run([SIGNERS, busy, busy, busy, busy])
    assert out["status"] == "busy" and len(out["calls"]) == 5


def test_a_failed_signer_list_is_shown() -> None:
    out = _run([[500, {"Content-Type": "text/html"}, "<h1>oops</h1>"], VIDEO])
    assert out["listed"] == "error 500" and out["signers"] == 0
