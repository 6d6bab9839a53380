// The review workspace's one script: forms go to the JSON API (with the session's
// X-CSRF-Token), errors show next to the field the API names.  No other file, no other host.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
}

async function api(method, url, data) {
  const headers = { "X-CSRF-Token": csrfToken() };
  const init = { method: method, headers: headers, credentials: "same-origin" };
  if (data !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(data);
  }
  const response = await fetch(url, init);
  let body = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    body = await response.json();
  }
  return { status: response.status, body: body };
}

function clearErrors(form) {
  form.querySelectorAll(".error").forEach(function (p) { p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
}

function showError(form, status, body) {
  const message = (body && body.error) || ("the server answered " + status);
  const rule = body && body.rule ? " (rule: " + body.rule + ")" : "";
  let field = body && body.field ? body.field : "";
  if (!field && (status === 401 || status === 423) && form.querySelector('[name="password"]')) {
    field = "password";
  }
  let target = form.querySelector('[data-error-for="' + field + '"]');
  if (!target) {
    target = form.querySelector('[data-error-for=""]');
  }
  target.textContent = message + rule;
  const input = field ? form.querySelector('[name="' + field + '"]') : null;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

function formData(form) {
  const data = {};
  new FormData(form).forEach(function (value, key) { data[key] = value; });
  if (form.dataset.kind === "context") {
    const set = {};
    const clear = [];
    if (data.value) { set[data.key] = data.value; } else if (data.key) { clear.push(data.key); }
    return { path: data.path, set: set, clear: clear, ts: data.ts || null, reason: data.reason };
  }
  return data;
}

function sessionEnded(status) {
  if (status === 401 && !document.getElementById("login-form")) {
    window.location.href = "/login?ended=1&next=" + encodeURIComponent(window.location.pathname);
    return true;
  }
  return false;
}

document.addEventListener("DOMContentLoaded", function () {
  const login = document.getElementById("login-form");
  if (login) {
    login.addEventListener("submit", async function (event) {
      event.preventDefault();
      clearErrors(login);
      const result = await api("POST", "/api/session", formData(login));
      if (result.status === 200) {
        window.location.href = login.dataset.next || "/";
      } else {
        showError(login, result.status, result.body);
      }
    });
  }

  document.querySelectorAll("form.api-form").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      clearErrors(form);
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      try {
        const result = await api("POST", form.dataset.action, formData(form));
        if (sessionEnded(result.status)) { return; }
        if (result.status >= 200 && result.status < 300) {
          if (form.dataset.kind === "context") {
            const said = document.getElementById("context-result");
            said.textContent = "Engine: " + result.body.status + (result.body.reason ? " (" + result.body.reason + ")" : "");
          } else if (form.dataset.reload) {
            window.location.reload();
          }
        } else {
          showError(form, result.status, result.body);
        }
      } finally {
        button.disabled = false;
      }
    });
  });

  function dialogOpener(buttonId, dialogId) {
    const button = document.getElementById(buttonId);
    const dialog = document.getElementById(dialogId);
    if (button && dialog) {
      button.addEventListener("click", function () {
        dialog.showModal();
        const first = dialog.querySelector("select, input:not([type=hidden]), textarea");
        if (first) { first.focus(); }
      });
    }
  }
  dialogOpener("open-sign", "sign-dialog");
  dialogOpener("open-context", "context-dialog");
  document.querySelectorAll(".close-dialog").forEach(function (button) {
    button.addEventListener("click", function () { button.closest("dialog").close(); });
  });

  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async function () {
      await api("DELETE", "/api/session");
      window.location.href = "/login";
    });
  }
});
