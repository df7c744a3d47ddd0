const $ = (id) => document.getElementById(id);
const MAX_TRIES = 4;
const sleep = (s) => new Promise((done) => setTimeout(done, s * 1000));
// The proxy in front of the app may answer by itself in plain text (a full queue: 503).
async function errorOf(r) {
  const type = r.headers.get("Content-Type") || "";
  let detail = r.statusText;
  try {
    if (type.includes("application/json")) {
      const doc = await r.json();
      if (doc && doc.error) return doc.error;
    } else if (type.startsWith("text/plain")) {
      detail = (await r.text()).trim().slice(0, 200) || detail;
    }
  } catch (e) { /* an unreadable body: the status says enough */ }
  return `error ${r.status}${detail ? `: ${detail}` : ""}`;
}
// Seconds to wait before retrying a busy answer (503/429 with Retry-After), else null.
function retryAfter(r) {
  const header = r.headers.get("Retry-After");
  const s = header === null ? NaN : Number(header);
  return (r.status === 503 || r.status === 429) && s >= 0 && s <= 60 ? s : null;
}
async function call(url, options) {
  for (let attempt = 1; ; attempt++) {
    const r = await fetch(url, options);
    const wait = retryAfter(r);
    if (r.ok || wait === null || attempt === MAX_TRIES) return r;
    $("status").textContent = `busy, retrying in ${wait} s...`;
    await sleep(wait);
  }
}
call("/v1/signers").then(async (r) => {
  if (!r.ok) { $("status").textContent = await errorOf(r); return; }
  for (const s of (await r.json()).signers) $("signer").add(new Option(s.name, s.name));
}).catch((e) => { $("status").textContent = `network error: ${e.message}`; });
$("go").onclick = async () => {
  $("status").textContent = "rendering...";
  const headers = {"Content-Type": "application/json"};
  if ($("key").value) headers.Authorization = `Bearer ${$("key").value}`;
  const body = {text: $("text").value, language: $("language").value, signer: $("signer").value};
  try {
    const r = await call("/v1/sign", {method: "POST", headers, body: JSON.stringify(body)});
    if (!r.ok) { $("status").textContent = await errorOf(r); return; }
    $("video").src = URL.createObjectURL(await r.blob());
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = `network error: ${e.message}`;
  }
};
