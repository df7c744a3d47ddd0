// The page at /: the form, the signers, and one player per renderer (two side by side when
// comparing). The API logic lives in sign-api.js (SignAPI); this file is the DOM around it.
"use strict";

const $ = (id) => document.getElementById(id);
const api = globalThis.SignAPI;
const FIELD_CONTROL = {signer: "signers"};  // error box id prefix -> the control to focus
const page = {info: null, timeline: null, players: [], controller: null, language: "de"};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// ------------------------------------------------------------------ messages
function setStatus(message) { $("status").textContent = message; }

function showError(field, message) {
  const box = $(`${field}-error`);
  const control = $(FIELD_CONTROL[field] || field);
  box.textContent = message;
  if (control) control.setAttribute("aria-invalid", "true");
}

function clearErrors(scope = document) {
  for (const el of scope.querySelectorAll(".error")) el.textContent = "";
  for (const el of scope.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

// An API error next to the field it concerns (focused), else in `fallback`.
function report(error, where, fallback) {
  if (!(error instanceof ApiError)) { fallback(`Network error: ${error.message}`); return; }
  const field = api.fieldOf(error.status, error.message, where);
  if (field === null || !$(`${field}-error`)) { fallback(error.message); return; }
  if (field === "key") $("key-panel").open = true;
  showError(field, error.message);
  const control = field === "signer" ? document.querySelector("#signers input") : $(field);
  if (control) control.focus();
}

function headers(json = true) {
  const out = json ? {"Content-Type": "application/json"} : {};
  const key = $("key").value.trim();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function checked(r) {
  if (!r.ok) throw new ApiError(r.status, await api.errorOf(r));
  return r;
}

const busyWait = (say) => (left) => say(left ? `The service is busy: retrying in ${left} s...` : "Retrying...");

// ------------------------------------------------------------------ service info, signers
async function loadInfo() {
  const info = await (await checked(await api.call("/v1/info"))).json();
  page.info = info;
  for (const option of $("language").options) option.disabled = !info.languages.includes(option.value);
  for (const id of ["renderer", "renderer2"]) {
    $(id).replaceChildren(...info.renderers.map((name) => new Option(name, name)));
  }
  $("renderer").value = info.default_renderer;
  $("renderer2").value = info.renderers.find((n) => n !== info.default_renderer) || info.default_renderer;
  $("text").maxLength = info.max_text_chars;
  if (info.sign_requires_key) $("key-panel").open = true;
  if (!info.uploads) {
    $("photo").disabled = $("signer-name").disabled = $("upload").disabled = true;
    $("upload-status").textContent = "This server has no pose estimator: it cannot add signers.";
  }
  countChars();
  updateCurl();
}

async function loadSigners(select) {
  const r = await checked(await api.call("/v1/signers"));
  const signers = (await r.json()).signers;
  const current = select || selectedSigner() || "default";
  const box = $("signers");
  box.replaceChildren();
  for (const s of signers) {
    const card = document.createElement("div");
    card.className = "signer";
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), {type: "radio", name: "signer", value: s.name});
    input.checked = s.name === current;
    input.addEventListener("change", updateCurl);
    const img = Object.assign(document.createElement("img"), {
      src: `/v1/signers/${encodeURIComponent(s.name)}/image`, alt: "", width: 72, height: 72, loading: "lazy",
    });
    const name = Object.assign(document.createElement("span"), {className: "signer-name", textContent: s.name});
    label.append(input, img, name);
    if (s.builtin) label.append(Object.assign(document.createElement("span"), {className: "badge", textContent: "built-in"}));
    if (s.adapted) label.append(Object.assign(document.createElement("span"), {className: "badge", textContent: "adapted"}));
    card.append(label);
    if (!s.builtin) {
      const del = Object.assign(document.createElement("button"), {type: "button", className: "delete", textContent: "Delete"});
      del.setAttribute("aria-label", `Delete signer ${s.name}`);
      del.addEventListener("click", () => deleteSigner(s.name));
      card.append(del);
    }
    box.append(card);
  }
  if (!selectedSigner() && box.querySelector("input")) box.querySelector("input").checked = true;
  updateCurl();
}

function selectedSigner() {
  const input = document.querySelector('#signers input[name="signer"]:checked');
  return input ? input.value : null;
}

async function deleteSigner(name) {
  clearErrors($("signers").parentElement);
  if (!window.confirm(`Delete the signer "${name}"? Renders under way with it still finish.`)) return;
  try {
    await checked(await api.call(`/v1/signers/${encodeURIComponent(name)}`, {method: "DELETE", headers: headers(false)}));
    $("upload-status").textContent = `Signer ${name} deleted.`;
    await loadSigners(selectedSigner() === name ? "default" : null);
  } catch (e) {
    report(e, "sign", (m) => showError("signer", m));
  }
}

// ------------------------------------------------------------------ upload with crop preview
async function previewPhoto() {
  clearErrors($("upload-panel"));
  const file = $("photo").files[0];
  $("crop-figure").hidden = true;
  if (!file) return;
  if (!["image/png", "image/jpeg"].includes(file.type)) { showError("photo", "Choose a PNG or JPEG image."); return; }
  if (page.info && file.size > page.info.max_upload_bytes) {
    showError("photo", `The photo is ${(file.size / 1e6).toFixed(1)} MB; the limit is ${(page.info.max_upload_bytes / 1e6).toFixed(0)} MB.`);
    return;
  }
  try {
    const bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});  // EXIF, as the service
    const {x, y, side} = api.cropRect(bitmap.width, bitmap.height);
    const canvas = $("crop");
    canvas.getContext("2d").drawImage(bitmap, x, y, side, side, 0, 0, canvas.width, canvas.height);
    $("crop-figure").hidden = false;
  } catch (e) {
    showError("photo", "This file could not be read as an image.");
    return;
  }
  if (!$("signer-name").value) {
    $("signer-name").value = file.name.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^[-_]+/, "").slice(0, 32);
  }
}

async function uploadSigner() {
  clearErrors($("upload-panel"));
  const file = $("photo").files[0];
  const name = $("signer-name").value.trim();
  if (!file) { showError("photo", "Choose a photo first."); $("photo").focus(); return; }
  if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(name)) {
    showError("signer-name", "1-32 characters: a-z, 0-9, - and _, starting with a letter or digit.");
    $("signer-name").focus();
    return;
  }
  const say = (m) => { $("upload-status").textContent = m; };
  say("Uploading and finding the pose...");
  $("upload").disabled = true;
  try {
    await checked(await api.call(`/v1/signers?name=${encodeURIComponent(name)}`, {
      method: "POST", headers: {...headers(false), "Content-Type": file.type}, body: file,
    }, busyWait(say)));
    say(`Signer ${name} added.`);
    $("photo").value = ""; $("signer-name").value = ""; $("crop-figure").hidden = true;
    await loadSigners(name);
  } catch (e) {
    say("");
    report(e, "upload", say);
  } finally {
    $("upload").disabled = false;
  }
}

// ------------------------------------------------------------------ the request
function requestBody() {
  const body = {text: $("text").value.trim(), language: $("language").value, signer: selectedSigner() || "default"};
  if ($("renderer").value) body.renderer = $("renderer").value;
  if ($("fps").value) body.fps = Number($("fps").value);
  return body;
}

function updateCurl() {
  const withKey = Boolean($("key").value.trim()) || Boolean(page.info && page.info.sign_requires_key);
  $("curl").textContent = api.curlCommand(location.origin, requestBody(), withKey);
}

function countChars() {
  const max = page.info ? page.info.max_text_chars : null;
  const n = $("text").value.length;
  $("text-count").textContent = max ? `${n} / ${max} characters` : `${n} characters`;
}

// ------------------------------------------------------------------ glosses
function showGlosses(timeline) {
  const list = $("glosses");
  list.replaceChildren();
  list.lang = page.language;
  const note = $("glosses-note");
  if (timeline.timed) {
    note.textContent = "The sign being performed is highlighted; select one to play it.";
    timeline.glosses.forEach((g, i) => {
      const item = document.createElement("li");
      if (i > 0 && g.sentence !== timeline.glosses[i - 1].sentence) item.className = "new-sentence";
      const button = Object.assign(document.createElement("button"), {type: "button", textContent: g.gloss});
      button.setAttribute("aria-label", `${g.gloss}, from ${(g.start / timeline.fps).toFixed(1)} s`);
      button.addEventListener("click", () => seekAll(g.start / timeline.fps));
      item.append(button);
      list.append(item);
    });
  } else if (timeline.sentences.length) {
    note.textContent = "This model finds the timing while it signs, so the signs are not highlighted.";
    for (const gloss of timeline.sentences.flat()) {
      list.append(Object.assign(document.createElement("li"), {textContent: gloss}));
    }
  } else {
    note.textContent = "This text-to-pose model does not report glosses.";
  }
}

function highlight(seconds) {
  const t = page.timeline;
  if (!t || !t.timed) return;
  const active = api.activeGloss(t.glosses, Math.floor(seconds * t.fps + 1e-3));
  $("glosses").querySelectorAll("li").forEach((item, i) => {
    item.classList.toggle("active", i === active);
    if (i === active) item.setAttribute("aria-current", "true"); else item.removeAttribute("aria-current");
  });
}

function seekAll(seconds) {
  for (const p of page.players) {
    p.video.currentTime = seconds;
    p.video.play().catch(() => {});
  }
}

// ------------------------------------------------------------------ a player (one renderer)
class Player {
  constructor(renderer, timeline) {
    const node = $("player-template").content.firstElementChild.cloneNode(true);
    this.node = node;
    this.renderer = renderer;
    this.timeline = timeline;
    this.video = node.querySelector("video");
    this.bar = node.querySelector("progress");
    this.text = node.querySelector(".progress-text");
    this.error = node.querySelector(".player-error");
    this.mp4 = node.querySelector(".download-mp4");
    node.querySelector(".player-title").textContent = `Renderer: ${renderer}`;
    this.video.setAttribute("aria-label", `Signed video, renderer ${renderer}`);
    this.bar.setAttribute("aria-label", `Frames rendered, renderer ${renderer}`);
    this.mp4.download = `sign-${renderer}.mp4`;
    this.urls = [];  // object URLs of this player, released by dispose()
    node.querySelector(".download-pose").addEventListener("click", () => this.downloadPose());
    const follow = () => highlight(this.video.currentTime);
    this.video.addEventListener("timeupdate", follow);
    this.video.addEventListener("seeked", follow);
    if (this.video.requestVideoFrameCallback) {
      const onFrame = (now, meta) => { highlight(meta.mediaTime); this.video.requestVideoFrameCallback(onFrame); };
      this.video.requestVideoFrameCallback(onFrame);
    }
    this.caption();
  }

  // The input sentence as a WebVTT caption over the whole video.
  caption() {
    const t = this.timeline;
    const seconds = t.timed && t.frames ? t.frames / t.fps : 3600;
    const vtt = new Blob([api.captionVTT($("text").value, seconds)], {type: "text/vtt"});
    const track = Object.assign(document.createElement("track"), {
      kind: "captions", label: "Sentence", srclang: page.language, src: this.url(vtt), default: true,
    });
    this.video.append(track);
  }

  progress(frames, done = false) {
    const total = this.timeline.timed ? Math.max(this.timeline.frames, frames) : null;
    if (total) { this.bar.max = total; this.bar.value = frames; } else if (done) { this.bar.max = 1; this.bar.value = 1; } else { this.bar.removeAttribute("value"); }
    this.text.textContent = total ? `${frames} / ${total} frames` : `${frames} frames`;
    if (done) this.text.textContent += ` rendered (${this.mode === "mse" ? "streamed" : "played when complete"})`;
  }

  async run(body, signal) {
    this.progress(0);
    const r = await checked(await api.call("/v1/sign", {
      method: "POST", headers: headers(), body: JSON.stringify({...body, renderer: this.renderer, stream: true}), signal,
    }, busyWait((m) => { this.text.textContent = m; })));
    const reader = new api.Mp4Reader();
    const chunks = [];
    const source = r.body.getReader();
    this.mode = "blob";
    let sink = null;
    try {
      for (;;) {
        const {done, value} = await source.read();
        if (done) break;
        chunks.push(value);
        this.progress(reader.push(value));
        if (!sink && reader.codec) {
          sink = await this.openSink(`video/mp4; codecs="${reader.codec}"`);
          if (sink) await sink.append(concat(chunks));
        } else if (sink) {
          await sink.append(value);
        }
      }
    } catch (e) {
      if (signal.aborted) throw e;
      this.error.textContent = `The stream broke off after ${reader.frames} frames (${e.message}). What arrived can be played; sign again to retry.`;
      if (sink) sink.end(); else if (chunks.length) this.play(chunks);
      if (chunks.length) this.offer(chunks);
      throw new Error("stream cut off");
    }
    if (sink) sink.end(); else this.play(chunks);
    this.offer(chunks);
    this.progress(reader.frames, true);
  }

  // MediaSource (ManagedMediaSource on iOS Safari) for a codec it plays, else null.
  async openSink(mime) {
    const Source = globalThis.ManagedMediaSource || globalThis.MediaSource;
    if (!Source || !Source.isTypeSupported(mime)) return null;
    const media = new Source();
    this.video.disableRemotePlayback = true;  // ManagedMediaSource needs it
    this.video.src = this.url(media);
    await new Promise((open) => media.addEventListener("sourceopen", open, {once: true}));
    const buffer = media.addSourceBuffer(mime);
    this.mode = "mse";
    let started = false;
    return {
      append: (bytes) => new Promise((ok, fail) => {
        buffer.addEventListener("updateend", ok, {once: true});
        buffer.addEventListener("error", () => fail(new Error("the browser could not decode the stream")), {once: true});
        buffer.appendBuffer(bytes);
      }).then(() => {
        if (!started && buffer.buffered.length) { started = true; this.video.play().catch(() => {}); }
      }),
      end: () => { if (media.readyState === "open" && !buffer.updating) media.endOfStream(); },
    };
  }

  play(chunks) {
    this.video.src = this.url(new Blob(chunks, {type: "video/mp4"}));
    this.video.play().catch(() => {});
  }

  offer(chunks) {
    this.mp4.href = this.url(new Blob(chunks, {type: "video/mp4"}));
    this.mp4.hidden = false;
  }

  url(object) {
    const url = URL.createObjectURL(object);
    this.urls.push(url);
    return url;
  }

  // Stop the video and free its memory (the page keeps only the latest render).
  dispose() {
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load();
    for (const url of this.urls) URL.revokeObjectURL(url);
  }

  async downloadPose() {
    this.error.textContent = "";
    try {
      const body = {...page.lastBody, renderer: this.renderer, format: "pose"};
      const r = await checked(await api.call("/v1/sign", {method: "POST", headers: headers(), body: JSON.stringify(body)}));
      const link = Object.assign(document.createElement("a"), {
        href: URL.createObjectURL(await r.blob()), download: `sign-${this.renderer}.pose`,
      });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (e) {
      this.error.textContent = e instanceof ApiError ? e.message : `Network error: ${e.message}`;
    }
  }
}

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

// ------------------------------------------------------------------ sign / cancel
async function sign(event) {
  event.preventDefault();
  clearErrors($("form"));
  const body = requestBody();
  if (!body.text) { showError("text", "Type a sentence to sign."); $("text").focus(); return; }
  cancel();
  updateCurl();
  const controller = new AbortController();
  page.controller = controller;
  page.lastBody = body;
  setBusy(true);
  setStatus("Translating to glosses...");
  try {
    const timeline = await (await checked(await api.call("/v1/glosses", {
      method: "POST", headers: headers(), body: JSON.stringify({text: body.text, language: body.language, fps: body.fps}),
      signal: controller.signal,
    }, busyWait(setStatus)))).json();
    page.timeline = timeline;
    showGlosses(timeline);
    const renderers = [$("renderer").value];
    if ($("compare").checked && $("renderer2").value !== renderers[0]) renderers.push($("renderer2").value);
    for (const old of page.players) old.dispose();
    page.players = renderers.map((name) => new Player(name, timeline));
    $("players").replaceChildren(...page.players.map((p) => p.node));
    $("players").classList.toggle("two", renderers.length === 2);
    // one column (phones): the video is below the form, so bring it into view
    if ($("output").getBoundingClientRect().top > innerHeight * 0.8) $("output").scrollIntoView();
    setStatus(renderers.length === 2 ? `Rendering with ${renderers.join(" and ")}...` : "Rendering...");
    const results = await Promise.allSettled(page.players.map((p) => p.run(body, controller.signal)));
    if (controller.signal.aborted) { setStatus("Cancelled."); return; }
    const failed = results.filter((r) => r.status === "rejected");
    for (const [i, r] of results.entries()) {
      if (r.status === "rejected" && r.reason instanceof ApiError) report(r.reason, "sign", (m) => { page.players[i].error.textContent = m; });
    }
    setStatus(failed.length ? "Not every video could be made: see the messages." : "Done.");
  } catch (e) {
    if (controller.signal.aborted) { setStatus("Cancelled."); return; }
    report(e, "sign", setStatus);
    if (e instanceof ApiError && api.fieldOf(e.status, e.message) !== null) setStatus("Check the marked field.");
  } finally {
    if (page.controller === controller) { page.controller = null; setBusy(false); }
  }
}

function cancel() {
  if (page.controller) page.controller.abort();
}

function setBusy(busy) {
  $("go").disabled = busy;
  $("cancel").disabled = !busy;
  $("output").setAttribute("aria-busy", String(busy));
  if (!busy && document.activeElement === $("cancel")) $("go").focus();
}

// ------------------------------------------------------------------ wiring
function init() {
  $("form").addEventListener("submit", sign);
  $("cancel").addEventListener("click", cancel);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && page.controller) cancel(); });
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
  });
  $("text").addEventListener("input", () => { countChars(); updateCurl(); });
  $("language").addEventListener("change", () => {
    page.language = $("language").value;
    $("text").lang = page.language;
    updateCurl();
  });
  for (const id of ["fps", "renderer", "renderer2", "key"]) $(id).addEventListener("change", updateCurl);
  $("compare").addEventListener("change", () => { $("renderer2").disabled = !$("compare").checked; });
  $("photo").addEventListener("change", previewPhoto);
  $("upload").addEventListener("click", uploadSigner);
  $("copy-curl").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("curl").textContent);
      $("copy-status").textContent = "Copied.";
    } catch (e) {  // no clipboard permission (e.g. plain http): select it for Ctrl+C
      getSelection().selectAllChildren($("curl"));
      $("copy-status").textContent = "Selected: press Ctrl+C to copy.";
    }
  });
  page.language = $("language").value;
  countChars();
  updateCurl();
  loadInfo().catch((e) => report(e, "sign", setStatus));
  loadSigners().catch((e) => report(e, "sign", (m) => showError("signer", m)));
}

init();
