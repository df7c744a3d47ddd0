// The page's logic that needs no DOM: talking to the API (errors, Retry-After), reading the
// fragmented mp4 stream, gloss timing, the curl command and the upload crop. Kept apart from
// app.js so that tests/test_web_page.py runs it in Node against scripted answers.
"use strict";

const SignAPI = (() => {
  const MAX_TRIES = 4;
  const MAX_WAIT_S = 60;

  // The message of a failed answer. The proxy in front of the app may answer by itself in
  // plain text (a full queue: 503); the app always answers {"error": ...}.
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
    return (r.status === 503 || r.status === 429) && s >= 0 && s <= MAX_WAIT_S ? s : null;
  }

  // One second, or less when aborted; rejects with the signal's reason when aborted.
  function tick(signal, seconds) {
    return new Promise((done, fail) => {
      if (signal && signal.aborted) { fail(signal.reason); return; }
      const timer = setTimeout(done, seconds * 1000);
      if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); fail(signal.reason); }, {once: true});
    });
  }

  // fetch, retried after Retry-After while the service is busy (up to MAX_TRIES answers);
  // onWait(secondsLeft, attempt) is called once a second during a wait: the countdown.
  async function call(url, options = {}, onWait = () => {}) {
    for (let attempt = 1; ; attempt++) {
      const r = await fetch(url, options);
      const wait = retryAfter(r);
      if (r.ok || wait === null || attempt === MAX_TRIES) return r;
      for (let left = Math.ceil(wait); left > 0; left--) {
        onWait(left, attempt);
        await tick(options.signal, Math.min(1, wait));
      }
      onWait(0, attempt);
    }
  }

  // Which form field an error of the API concerns (its messages name the field), else null.
  // `where` is "sign" (also /v1/glosses) or "upload".
  function fieldOf(status, message, where = "sign") {
    const m = message.toLowerCase();
    if (status === 401) return "key";
    if (where === "upload") {
      if (status === 409 && m.includes("already exists")) return "signer-name";
      if (m.includes("name")) return "signer-name";
      if (status === 413 || status === 415 || m.includes("image") || m.includes("upload")
          || m.includes("signer found") || m.includes("person")) return "photo";
      return null;
    }
    if (m.includes("signer")) return "signer";
    if (m.includes("language")) return "language";
    if (m.includes("renderer")) return "renderer";
    if (m.startsWith("fps") || m.includes(" fps")) return "fps";
    if (status === 422 || status === 400) return "text";
    return null;
  }

  // The request as a copyable shell command; the key is never written out, only its variable.
  function curlCommand(origin, body, withKey) {
    const quote = (s) => `'${s.replace(/'/g, "'\\''")}'`;
    const out = body.format === "pose" ? "sign.pose" : body.format === "pose-json" ? "sign.json" : "sign.mp4";
    const lines = [`curl -X POST ${quote(`${origin}/v1/sign`)}`, "-H 'Content-Type: application/json'"];
    if (withKey) lines.push('-H "Authorization: Bearer $SLP_API_KEY"');
    lines.push(`-d ${quote(JSON.stringify(body))}`, `-o ${out}`);
    return lines.join(" \\\n  ");
  }

  // The square the service keeps of a w x h photo: the centre, as PIL's ImageOps.fit (which
  // may start it half a pixel in; canvas drawImage takes such a box as it is).
  function cropRect(w, h) {
    const side = Math.min(w, h);
    return {x: (w - side) / 2, y: (h - side) / 2, side};
  }

  // Index of the timed gloss being signed at `frame`, else -1 (between signs).
  function activeGloss(glosses, frame) {
    for (let i = 0; i < glosses.length; i++) {
      if (glosses[i].start <= frame && frame < glosses[i].end) return i;
    }
    return -1;
  }

  function timestamp(seconds) {
    const ms = Math.max(0, Math.round(seconds * 1000));
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${pad(Math.floor(ms / 3600000))}:${pad(Math.floor(ms / 60000) % 60)}:` +
      `${pad(Math.floor(ms / 1000) % 60)}.${pad(ms % 1000, 3)}`;
  }

  // A WebVTT file with one cue: the input sentence over the whole video.
  function captionVTT(text, seconds) {
    const cue = text.replace(/-->/g, "->").split(/\r?\n/).filter((l) => l.trim()).join("\n");
    return `WEBVTT\n\n1\n${timestamp(0)} --> ${timestamp(seconds)}\n${cue}\n`;
  }

  // Counts the video frames in a fragmented mp4 as its bytes arrive (the sample_count of each
  // moof/traf/trun box), and finds the codec of its init segment (for MediaSource).
  class Mp4Reader {
    constructor() { this.pending = new Uint8Array(0); this.frames = 0; this.codec = null; }

    push(bytes) {
      const data = new Uint8Array(this.pending.length + bytes.length);
      data.set(this.pending); data.set(bytes, this.pending.length);
      let at = 0;
      while (data.length - at >= 8) {
        const size = readU32(data, at);
        if (size < 8) throw new Error("not an mp4 stream");
        if (data.length - at < size) break;
        const type = boxType(data, at);
        if (type === "moof") this.frames += sampleCount(data, at + 8, at + size);
        if (type === "moov") this.codec = avcCodec(data, at + 8, at + size) || this.codec;
        at += size;
      }
      this.pending = data.slice(at);
      return this.frames;
    }
  }

  function readU32(d, at) { return ((d[at] << 24) | (d[at + 1] << 16) | (d[at + 2] << 8) | d[at + 3]) >>> 0; }
  function boxType(d, at) { return String.fromCharCode(d[at + 4], d[at + 5], d[at + 6], d[at + 7]); }

  // Sum of trun sample counts inside [start, end) (moof -> traf -> trun).
  function sampleCount(d, start, end) {
    let count = 0;
    for (let at = start; at + 8 <= end;) {
      const size = readU32(d, at), type = boxType(d, at);
      if (size < 8) break;
      if (type === "traf") count += sampleCount(d, at + 8, at + size);
      if (type === "trun") count += readU32(d, at + 12);  // after version/flags
      at += size;
    }
    return count;
  }

  // "avc1.PPCCLL" from the avcC record (profile, compatibility, level) inside the moov box.
  function avcCodec(d, start, end) {
    for (let at = start; at + 12 <= end; at++) {
      if (d[at] === 0x61 && d[at + 1] === 0x76 && d[at + 2] === 0x63 && d[at + 3] === 0x43) {
        const hex = (b) => b.toString(16).padStart(2, "0");
        return `avc1.${hex(d[at + 5])}${hex(d[at + 6])}${hex(d[at + 7])}`;
      }
    }
    return null;
  }

  return {MAX_TRIES, errorOf, retryAfter, call, fieldOf, curlCommand, cropRect, activeGloss,
    captionVTT, timestamp, Mp4Reader};
})();
globalThis.SignAPI = SignAPI;
