// sockit's page: the file store (list, upload with resumable tus uploads, download) and the
// chat rooms over a WebSocket. No framework, nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const TUS = { "Tus-Resumable": "1.0.0" };
const RESUME_KEY = "sockit.uploads";

// ---------- session ----------

async function start() {
  let session = { accounts: false, user: null };
  try {
    session = await (await fetch("/api/session")).json();
  } catch (err) {
    $("files-error").textContent = "The server cannot be reached.";
  }
  const loggedIn = !session.accounts || session.user;
  $("login-panel").hidden = !!loggedIn;
  $("workspace").hidden = !loggedIn;
  $("account").hidden = !session.user;
  $("account-user").textContent = session.user || "";
  if (loggedIn) {
    loadFiles();
    showPending();
  } else {
    $("login-user").focus();
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const body = JSON.stringify({ user: $("login-user").value, password: $("login-password").value });
  const response = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body,
  });
  if (response.ok) {
    $("login-password").value = "";
    start();
  } else {
    const reply = await response.json().catch(() => ({}));
    $("login-error").textContent = reply.error || "Login failed.";
  }
});

$("logout").addEventListener("click", async () => {
  await fetch("/api/logout", { method: "POST" });
  closeChat();
  start();
});

// ---------- files ----------

let files = [];
let sortKey = "modified";
let sortDown = true;

function formatSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = bytes, unit = 0;
  while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit++; }
  return (unit === 0 ? size : size.toFixed(1)) + " " + units[unit];
}

function formatTime(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

async function loadFiles() {
  $("files-error").textContent = "";
  const all = [];
  let after = null;
  try {
    for (let page = 0; page < 100; page++) {
      const query = after === null ? "" : "?after=" + encodeURIComponent(after);
      const response = await fetch("/api/files" + query);
      if (response.status === 401) { start(); return; }
      if (!response.ok) throw new Error((await response.json()).error);
      const entries = await response.json();
      all.push(...entries);
      if (response.headers.get("Sockit-More") !== "true" || entries.length === 0) break;
      after = entries[entries.length - 1].name;
    }
  } catch (err) {
    $("files-error").textContent = "Cannot list the files: " + err.message;
  }
  files = all;
  renderFiles();
}

function renderFiles() {
  const sign = sortDown ? -1 : 1;
  const sorted = [...files].sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return sign * (order || a.name.localeCompare(b.name));
  });
  const body = $("files");
  body.replaceChildren(...sorted.map((file) => {
    const row = document.createElement("tr");
    row.dataset.name = file.name;
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/files/" + encodeURIComponent(file.name);
    link.download = file.name;
    link.textContent = file.name;
    name.append(link);
    const size = document.createElement("td");
    size.className = "num";
    size.textContent = formatSize(file.length);
    size.title = file.length + " bytes";
    const modified = document.createElement("td");
    modified.textContent = formatTime(file.modified);
    row.append(name, size, modified);
    return row;
  }));
  $("files-empty").hidden = files.length > 0;
  for (const button of document.querySelectorAll("button.sort")) {
    if (button.dataset.key === sortKey) {
      button.setAttribute("aria-sort", sortDown ? "descending" : "ascending");
    } else {
      button.removeAttribute("aria-sort");
    }
  }
}

for (const button of document.querySelectorAll("button.sort")) {
  button.addEventListener("click", () => {
    const key = button.dataset.key;
    sortDown = key === sortKey ? !sortDown : key !== "name";
    sortKey = key;
    renderFiles();
  });
}
$("refresh").addEventListener("click", loadFiles);

// ---------- uploads (tus 1.0) ----------

function resumable() {
  try { return JSON.parse(localStorage.getItem(RESUME_KEY)) || {}; } catch { return {}; }
}

function remember(key, location) {
  const held = resumable();
  if (location) held[key] = { location, at: Date.now() }; else delete held[key];
  localStorage.setItem(RESUME_KEY, JSON.stringify(held));
  showPending();
}

function showPending() {
  const names = Object.keys(resumable()).map((key) => JSON.parse(key)[0]);
  const note = $("pending");
  note.hidden = names.length === 0 || active > 0;
  note.textContent = "Unfinished uploads: " + names.join(", ") +
    ". Choose the same files again to finish them.";
}

function base64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

let active = 0;

function uploadRow(file) {
  const item = document.createElement("li");
  const name = document.createElement("span");
  name.textContent = file.name;
  const status = document.createElement("span");
  status.className = "num";
  const bar = document.createElement("progress");
  bar.max = file.size || 1;
  bar.value = 0;
  bar.setAttribute("aria-label", "Upload of " + file.name);
  item.append(name, status, bar);
  $("uploads").append(item);
  return { item, status, bar };
}

async function headOffset(location) {
  const response = await fetch(location, { method: "HEAD", headers: TUS });
  if (!response.ok) return null;
  return Number(response.headers.get("Upload-Offset"));
}

async function createUpload(file, overwrite) {
  const metadata = "filename " + base64(file.name) + (overwrite ? ", overwrite " + base64("true") : "");
  const response = await fetch("/api/uploads", {
    method: "POST",
    headers: { ...TUS, "Upload-Length": String(file.size), "Upload-Metadata": metadata },
  });
  if (!response.ok) {
    const reply = await response.json().catch(() => ({}));
    throw new Error(reply.error || response.statusText);
  }
  return response.headers.get("Location");
}

// Sends the rest of `file` from `offset` in one PATCH, reporting progress; resolves to the
// offset the server holds afterwards.
function patch(location, file, offset, view) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PATCH", location);
    request.setRequestHeader("Tus-Resumable", "1.0.0");
    request.setRequestHeader("Upload-Offset", String(offset));
    request.setRequestHeader("Content-Type", "application/offset+octet-stream");
    const started = performance.now();
    request.upload.onprogress = (event) => {
      const seconds = (performance.now() - started) / 1000;
      view.bar.value = offset + event.loaded;
      const speed = seconds > 0.2 ? formatSize(event.loaded / seconds) + "/s" : "";
      view.status.textContent = Math.floor(100 * (offset + event.loaded) / (file.size || 1)) + "% " + speed;
    };
    request.onload = () => {
      if (request.status === 204) resolve(Number(request.getResponseHeader("Upload-Offset")));
      else {
        let reply = {};
        try { reply = JSON.parse(request.responseText); } catch { /* not JSON */ }
        reject(Object.assign(new Error(reply.error || request.statusText), { status: request.status }));
      }
    };
    request.onerror = () => reject(new Error("network error"));
    request.send(file.slice(offset));
  });
}

async function upload(file, overwrite) {
  active++;
  showPending();
  const view = uploadRow(file);
  const key = JSON.stringify([file.name, file.size, file.lastModified]);
  try {
    let location = resumable()[key]?.location;
    let offset = location ? await headOffset(location) : null;
    if (offset === null) {
      location = await createUpload(file, overwrite);
      remember(key, location);
      offset = 0;
    }
    for (let attempt = 0; offset < file.size; attempt++) {
      try {
        offset = await patch(location, file, offset, view);
      } catch (err) {
        if (attempt >= 8 || (err.status && err.status < 500 && err.status !== 409)) throw err;
        view.status.textContent = "retrying…";
        await new Promise((wake) => setTimeout(wake, Math.min(30000, 500 * 2 ** attempt)));
        const held = await headOffset(location).catch(() => null);
        if (held !== null) offset = held;
      }
    }
    view.bar.value = file.size;
    view.status.textContent = "done";
    view.status.className = "num done";
    remember(key, null);
  } catch (err) {
    view.status.textContent = "failed: " + err.message;
    view.status.className = "num failed";
  } finally {
    active--;
    showPending();
    loadFiles();
  }
}

function uploadAll(list) {
  const overwrite = $("overwrite").checked;
  for (const file of list) upload(file, overwrite);
}

$("picker").addEventListener("change", (event) => {
  uploadAll([...event.target.files]);
  event.target.value = "";
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  uploadAll([...event.dataTransfer.files]);
});
drop.addEventListener("keydown", (event) => {
  if (event.target === drop && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    $("picker").click();
  }
});

// ---------- chat ----------

let socket = null;
let whoTimer = null;

function chatLine(text, kind) {
  const list = $("chat-lines");
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(item);
  while (list.children.length > 500) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function askWho() {
  clearTimeout(whoTimer);
  whoTimer = setTimeout(() => socket?.readyState === WebSocket.OPEN && socket.send("/who"), 300);
}

function heard(line) {
  const who = /^\* [^ ]+: (.*)$/.exec(line);
  if (who && !line.includes(" joined") && !line.includes(" left")) {
    const list = $("chat-who");
    list.replaceChildren(...who[1].split(", ").filter(Boolean).map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }));
    return;
  }
  chatLine(line, line.startsWith("*") || line.startsWith("!") ? "notice" : "");
  if (/^\* .* (joined|left|is now .*)$/.test(line) || line.startsWith("* you are")) askWho();
}

function setChatState(open) {
  $("chat-state").textContent = open ? "connected" : "offline";
  $("chat-line").disabled = !open;
  $("chat-send").disabled = !open;
  $("chat-connect").textContent = open ? "Rejoin" : "Join";
}

function closeChat() {
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  setChatState(false);
}

$("chat-join").addEventListener("submit", (event) => {
  event.preventDefault();
  closeChat();
  const nick = $("chat-nick").value.trim();
  const room = $("chat-room").value.trim() || "lobby";
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/chat");
  socket.onopen = () => {
    setChatState(true);
    // The first line joins; a nick or a room other than the lobby is asked for at once.
    if (nick) socket.send("/nick " + nick); else socket.send("/who");
    if (room !== "lobby") socket.send("/join " + room);
    askWho();
    $("chat-line").focus();
  };
  socket.onmessage = (event) => {
    for (const line of String(event.data).split("\n")) if (line) heard(line);
  };
  socket.onclose = () => {
    setChatState(false);
    chatLine("* disconnected", "notice");
  };
});

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("chat-line");
  const text = input.value;
  if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(text);
  if (!text.startsWith("/")) chatLine("> " + text, "mine");
  input.value = "";
});

start();
