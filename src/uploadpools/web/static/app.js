// Upload Pools: small progressive enhancements. Every page works without this script
// except drag-and-drop (upload and reorder), which has button equivalents.
"use strict";

function post(url, csrf, body) {
  return fetch(url, {
    method: "POST",
    headers: { "X-CSRF-Token": csrf },
    body: body,
    credentials: "same-origin",
  });
}

document.addEventListener("DOMContentLoaded", () => {
  // Phone-width menu.
  const toggle = document.querySelector(".menu-toggle");
  const sidebar = document.getElementById("sidebar");
  if (toggle && sidebar) {
    toggle.addEventListener("click", () => {
      const open = sidebar.classList.toggle("open");
      toggle.setAttribute("aria-expanded", String(open));
    });
  }

  document.querySelectorAll("select[data-autosubmit]").forEach((el) => {
    el.addEventListener("change", () => el.form.submit());
  });

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });

  // While videos are being posted, keep the page current (a real reload: a meta refresh
  // to a URL with a #fragment would only scroll).
  const live = document.querySelector('meta[name="refresh-while-posting"]');
  if (live) setTimeout(() => window.location.reload(), Number(live.content) * 1000);

  // A field marked invalid by the server stops looking invalid once it is edited.
  document.addEventListener("input", (ev) => {
    const el = ev.target;
    if (!(el instanceof HTMLElement) || el.getAttribute("aria-invalid") !== "true") return;
    el.removeAttribute("aria-invalid");
    const msg = document.getElementById(el.getAttribute("aria-describedby") || "");
    if (msg) msg.hidden = true;
  });

  setupPoolForm();
  setupUploads();
  setupReorder();
});

function setupPoolForm() {
  const tz = document.getElementById("timezone");
  if (tz && tz.hasAttribute("data-browser-default") && !tz.value) {
    try {
      tz.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      /* keep it empty: the user types one */
    }
  }
  const slots = document.getElementById("slots");
  const template = document.getElementById("slot-template");
  const add = document.getElementById("add-slot");
  if (!slots) return;
  let next = slots.querySelectorAll(".slot-row").length;
  if (add && template) {
    add.addEventListener("click", () => {
      const html = template.innerHTML.replaceAll("__i__", String(next++));
      slots.insertAdjacentHTML("beforeend", html);
      const row = slots.lastElementChild;
      // A single account is the obvious choice for a new slot.
      const boxes = row.querySelectorAll('input[name$="-accounts"]');
      if (boxes.length === 1) boxes[0].checked = true;
      row.querySelector('input[type="time"]').focus();
    });
  }
  slots.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button");
    if (!btn) return;
    const row = btn.closest(".slot-row");
    if (btn.classList.contains("remove-slot")) {
      row.remove();
    } else if (btn.dataset.days) {
      const days = btn.dataset.days.split(",");
      row.querySelectorAll('input[name$="-days"]').forEach((box) => {
        box.checked = days.includes(box.value);
      });
    }
  });
}

function setupUploads() {
  const zone = document.getElementById("dropzone");
  if (!zone) return;
  const input = document.getElementById("file-input");
  const list = document.getElementById("uploads");
  const url = zone.dataset.upload;
  const csrf = zone.dataset.csrf;

  function uploadOne(file) {
    const li = document.createElement("li");
    li.className = "upload";
    const name = document.createElement("span");
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Uploading " + file.name);
    const status = document.createElement("span");
    status.className = "upload-status";
    status.textContent = "waiting";
    li.append(name, bar, status);
    list.append(li);
    return () =>
      new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", url);
        xhr.setRequestHeader("X-CSRF-Token", csrf);
        xhr.upload.addEventListener("progress", (ev) => {
          if (ev.lengthComputable) {
            bar.value = Math.round((ev.loaded / ev.total) * 100);
            status.textContent = bar.value + "%";
          }
        });
        xhr.addEventListener("load", () => {
          if (xhr.status === 201) {
            bar.value = 100;
            status.textContent = "added";
            li.classList.add("ok");
          } else {
            let detail = xhr.statusText;
            try {
              detail = JSON.parse(xhr.responseText).detail || detail;
            } catch (e) {
              /* not JSON */
            }
            status.textContent = "failed: " + detail;
            li.classList.add("failed");
          }
          resolve(xhr.status === 201);
        });
        xhr.addEventListener("error", () => {
          status.textContent = "failed: network error";
          li.classList.add("failed");
          resolve(false);
        });
        const body = new FormData();
        body.append("file", file, file.name);
        status.textContent = "0%";
        xhr.send(body);
      });
  }

  async function uploadAll(files) {
    // One after another, so the queue keeps the order the files were chosen in.
    files = Array.from(files); // an input's FileList empties when the input is reset
    const jobs = files.map(uploadOne);
    let failed = 0;
    for (const job of jobs) {
      if (!(await job())) failed++;
    }
    if (failed === 0) {
      // Show the new queue; the finished bars stay on screen across the reload.
      sessionStorage.setItem(KEY, JSON.stringify(files.map((f) => f.name)));
      window.location.reload();
    }
  }

  const KEY = "uploaded:" + url;
  const finished = sessionStorage.getItem(KEY);
  if (finished) {
    sessionStorage.removeItem(KEY);
    for (const name of JSON.parse(finished)) {
      const li = document.createElement("li");
      li.className = "upload ok";
      const label = document.createElement("span");
      label.textContent = name;
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = 100;
      bar.setAttribute("aria-label", "Uploaded " + name);
      const status = document.createElement("span");
      status.className = "upload-status";
      status.textContent = "added";
      li.append(label, bar, status);
      list.append(li);
    }
  }

  input.addEventListener("change", () => {
    if (input.files.length) uploadAll(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach((t) =>
    zone.addEventListener(t, (ev) => {
      if (!ev.dataTransfer || !Array.from(ev.dataTransfer.types).includes("Files")) return;
      ev.preventDefault();
      zone.classList.add("over");
    })
  );
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (ev) => {
    if (!ev.dataTransfer || !ev.dataTransfer.files.length) return;
    ev.preventDefault();
    uploadAll(ev.dataTransfer.files);
  });
}

function setupReorder() {
  const list = document.getElementById("queue-list");
  if (!list) return;
  let dragged = null;
  list.addEventListener("dragstart", (ev) => {
    dragged = ev.target.closest("li[data-item]");
    if (!dragged) return;
    ev.dataTransfer.effectAllowed = "move";
    ev.dataTransfer.setData("text/plain", dragged.dataset.item);
    dragged.classList.add("dragging");
  });
  list.addEventListener("dragover", (ev) => {
    if (!dragged) return;
    ev.preventDefault();
    const over = ev.target.closest("li[data-item]");
    if (!over || over === dragged) return;
    const rect = over.getBoundingClientRect();
    const after = ev.clientY > rect.top + rect.height / 2;
    over.parentNode.insertBefore(dragged, after ? over.nextSibling : over);
  });
  list.addEventListener("drop", async (ev) => {
    if (!dragged) return;
    ev.preventDefault();
    const items = Array.from(list.querySelectorAll(":scope > li[data-item]"));
    const index = items.indexOf(dragged);
    const body = new URLSearchParams({ to: String(index) });
    const id = dragged.dataset.item;
    dragged.classList.remove("dragging");
    dragged = null;
    // Until the page comes back with the server's order, no other move from this page:
    // the reload would drop its form submission.
    list.setAttribute("aria-busy", "true");
    list.querySelectorAll("form.moves button").forEach((b) => {
      b.disabled = true;
    });
    try {
      await post(list.dataset.move + id + "/move", list.dataset.csrf, body);
    } finally {
      window.location.reload(); // the server's order, also when it refused this one
    }
  });
  list.addEventListener("dragend", () => {
    if (dragged) {
      dragged.classList.remove("dragging");
      dragged = null;
      window.location.reload();
    }
  });
}
