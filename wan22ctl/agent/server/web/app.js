// The web page of the resident server: no build step, no CDN, only this server's own API.
// The API key (when the server has one) is asked once and kept in localStorage; every call,
// the event streams and the video downloads send it as a Bearer header, which is why streams
// are read with fetch() rather than EventSource and videos are played from blob URLs.
"use strict";

const KEY = "wan22ctl.apiKey";
const $ = (id) => document.getElementById(id);
const cards = new Map();     // video id -> <li>
const watching = new Set();  // ids with an open event stream
let info = null;

function headers(extra = {}) {
  const key = localStorage.getItem(KEY);
  return key ? {...extra, Authorization: "Bearer " + key} : extra;
}

async function api(path, options = {}) {
  const r = await fetch(path, {...options, headers: headers(options.headers)});
  if (r.status === 401) {
    askKey("The server refused the API key.");
    throw new Error("API key refused");
  }
  return r;
}

async function errorText(r) {
  try {
    const e = (await r.json()).error;
    return (e.param ? e.param + ": " : "") + e.message;
  } catch (_) {
    return "HTTP " + r.status;
  }
}

function askKey(message) {
  $("keyform").hidden = false;
  $("create").hidden = true;
  $("keyerror").textContent = message || "";
  $("key").focus();
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
}

function render(v) {
  let li = cards.get(v.id);
  if (!li) {
    li = $("jobtpl").content.firstElementChild.cloneNode(true);
    li.dataset.id = v.id;
    li.querySelector(".cancel").onclick = () => cancel(v.id);
    li.querySelector(".delete").onclick = () => remove(v.id);
    cards.set(v.id, li);
    const list = $("jobs");
    const after = [...list.children].find((x) => cards.get(x.dataset.id) && x.dataset.seq < v.seq);
    list.insertBefore(li, after || null);
    $("queuetitle").hidden = false;
  }
  li.dataset.seq = v.seq;
  li.dataset.state = v.state;
  li.className = "job " + v.state;
  const d = v.progress_detail || {};
  li.querySelector(".state").textContent = v.state;
  li.querySelector(".prompt").textContent = v.prompt;
  li.querySelector("progress").value = v.progress;
  let detail = "";
  if (v.state === "queued") detail = "position " + ((d.queue_position || 0) + 1) + " in the queue";
  else if (v.state === "running") {
    detail = d.phase + (d.phase === "denoising" ? " step " + d.step + "/" + d.total : "");
    if (d.clips > 1) detail += " · clip " + d.clip + " of " + d.clips;
    if (d.expert) detail += " · " + d.expert.replace("_", "-") + " expert";
    if (d.seconds_per_step) detail += " · " + d.seconds_per_step.toFixed(2) + " s/step";
    if (d.eta_seconds !== null && d.eta_seconds !== undefined) detail += " · ETA " + fmtSeconds(d.eta_seconds);
  } else if (v.state === "succeeded" && v.timings) detail = "done in " + fmtSeconds(v.timings.total_s);
  li.querySelector(".detail").textContent = detail;
  const p = v.params || {};
  li.querySelector(".settings").textContent = [v.size, v.seconds + " s",
    p.clips ? p.clips + " clip(s) of " + p.frame_num + " frames" : p.frame_num + " frames",
    p.sample_steps + " steps", "seed " + (v.seed ?? "random"), p.image_sha256 ? "with image" : ""]
    .filter(Boolean).join(" · ");
  li.querySelector(".error").textContent = v.error ? v.error.message : "";
  li.querySelector(".cancel").hidden = !(v.state === "queued" || v.state === "running");
  li.querySelector(".delete").hidden = v.state === "queued" || v.state === "running";
  if (v.state === "succeeded") play(li, v);
  if (v.state === "queued" || v.state === "running") watch(v.id);
}

async function play(li, v) {
  const video = li.querySelector("video");
  if (video.dataset.loaded) return;
  video.dataset.loaded = "1";
  const r = await api(v.content_url);
  if (!r.ok) {
    li.querySelector(".error").textContent = await errorText(r);
    return;
  }
  video.src = URL.createObjectURL(await r.blob());
  video.hidden = false;
}

async function watch(id) {
  if (watching.has(id)) return;
  watching.add(id);
  try {
    const r = await api("/v1/videos/" + id + "/events", {headers: {Accept: "text/event-stream"}});
    if (!r.ok) return;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", event = "message";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, "");
        buf = buf.slice(i + 1);
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) {
          const data = JSON.parse(line.slice(6));
          if (event === "deleted") drop(id); else render(data);
        } else if (line === "") event = "message";
      }
    }
  } catch (_) {
    // the server went away: the next refresh picks the job up again
  } finally {
    watching.delete(id);
  }
}

function drop(id) {
  const li = cards.get(id);
  if (li) li.remove();
  cards.delete(id);
}

async function cancel(id) {
  const r = await api("/v1/videos/" + id + "/cancel", {method: "POST"});
  if (r.ok) render(await r.json());
}

async function remove(id) {
  const r = await api("/v1/videos/" + id, {method: "DELETE"});
  if (r.ok) drop(id);
}

async function refresh() {
  const r = await api("/v1/videos?order=desc&limit=30");
  if (!r.ok) return;
  const page = await r.json();
  page.data.reverse().forEach(render);
}

async function submit(ev) {
  ev.preventDefault();
  $("createerror").textContent = "";
  const form = new FormData();
  form.append("prompt", $("prompt").value);
  form.append("size", $("size").value);
  for (const [id, name] of [["seconds", "seconds"], ["steps", "sample_steps"], ["seed", "seed"]]) {
    if ($(id).value !== "" && !$(id).closest("label").hidden) form.append(name, $(id).value);
  }
  if (!$("imagebox").hidden && $("image").files.length) form.append("input_reference", $("image").files[0]);
  if (!$("audiobox").hidden && $("audio").files.length) form.append("audio", $("audio").files[0]);
  $("submit").disabled = true;
  try {
    const r = await api("/v1/videos", {method: "POST", body: form});
    if (!r.ok) {
      $("createerror").textContent = await errorText(r);
      return;
    }
    render(await r.json());
  } finally {
    $("submit").disabled = false;
  }
}

async function start() {
  const r = await fetch("/v1/info", {headers: headers()});
  if (r.status === 401) {
    askKey(localStorage.getItem(KEY) ? "The server refused the saved API key." : "");
    return;
  }
  info = await r.json();
  $("keyform").hidden = true;
  $("forget").hidden = !info.auth;
  $("server").textContent = info.task + (info.ready ? " · ready" : " · loading the model…");
  const size = $("size");
  size.replaceChildren(...info.sizes.map((s) => new Option(s, s, s === info.default_size, s === info.default_size)));
  $("seconds").placeholder = ((info.default_frames - 1) / info.fps).toFixed(1);
  $("steps").placeholder = info.default_steps;
  $("imagebox").hidden = !info.accepts_image;
  $("image").required = info.needs_image;
  $("audiobox").hidden = !info.needs_audio;  // s2v: the speech, whose length sets the video's
  $("audio").required = info.needs_audio;
  $("secondsbox").hidden = info.needs_audio;
  $("create").hidden = false;
  await refresh();
}

$("keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(KEY, $("key").value.trim());
  $("key").value = "";
  start();
});
$("forget").addEventListener("click", () => {
  localStorage.removeItem(KEY);
  location.reload();
});
$("create").addEventListener("submit", submit);
start();
setInterval(() => { if (info) refresh().catch(() => {}); }, 10000);
