/* wallet-proxy preview page: copy Liquid paths, expand/collapse, render templates. No inline script. */
(function () {
  "use strict";

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var toastTimer = null;

  function toast(text) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 2200);
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; },
        function () { return fallbackCopy(text); });
    }
    return Promise.resolve(fallbackCopy(text));
  }

  function copyPath(path) {
    var liquid = "{{" + path + "}}";
    copy(liquid).then(function (ok) {
      var copied = document.getElementById("copied");
      if (copied) copied.textContent = (ok ? "Copied " : "Select and copy: ") + liquid;
      toast(ok ? "Copied " + liquid : liquid);
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-path]");
    if (target) {
      event.preventDefault(); // a key inside <summary> copies instead of toggling
      copyPath(target.getAttribute("data-path"));
      return;
    }
    var copyButton = event.target.closest("[data-copy-target]");
    if (copyButton) {
      var source = document.getElementById(copyButton.getAttribute("data-copy-target"));
      if (source) copy(source.textContent).then(function (ok) { toast(ok ? "Copied the block" : "Select the block to copy it"); });
      return;
    }
    var treeButton = event.target.closest("[data-tree]");
    if (treeButton) {
      var open = treeButton.getAttribute("data-tree") === "expand";
      document.querySelectorAll("#tree details").forEach(function (d) { d.open = open; });
    }
  });

  // A logo that fails to load leaves the offer's initial visible instead of a broken image.
  document.querySelectorAll(".logo-box img").forEach(function (img) {
    img.addEventListener("error", function () { img.remove(); });
  });

  var form = document.getElementById("render-form");
  if (!form) return;
  var output = document.getElementById("render-output");
  var errorBox = document.getElementById("render-error");
  var meta = document.getElementById("render-meta");

  // The template gallery (docs/templates, listed in static/gallery.json): picking one fills the editor.
  var examples = document.getElementById("examples");
  if (examples) {
    fetch(examples.getAttribute("data-src"), { credentials: "same-origin" }).then(function (response) {
      return response.ok ? response.json() : [];
    }).then(function (list) {
      list.forEach(function (item, index) {
        var option = document.createElement("option");
        option.value = String(index);
        option.textContent = item.name;
        examples.appendChild(option);
      });
      examples.addEventListener("change", function () {
        var item = list[Number(examples.value)];
        if (examples.value !== "" && item) document.getElementById("template").value = item.template;
      });
    }).catch(function () { examples.disabled = true; });
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
    output.hidden = true;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    meta.textContent = "Rendering…";
    errorBox.hidden = true;
    output.hidden = true;
    fetch("/preview/api/render", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({
        user_id: form.getAttribute("data-user-id"),
        culture: form.getAttribute("data-culture"),
        template: document.getElementById("template").value
      })
    }).then(function (response) {
      return response.json().then(function (body) { return { status: response.status, body: body }; },
        function () { return { status: response.status, body: null }; });
    }).then(function (answer) {
      var body = answer.body;
      meta.textContent = "";
      if (body && body.ok) {
        output.textContent = body.aborted !== null && body.aborted !== undefined
          ? "Message aborted: " + body.aborted + "\n(Braze would not send this message to this user.)"
          : body.output;
        output.hidden = false;
        meta.textContent = "Rendered in " + body.elapsed_ms + " ms" +
          (body.wallet_error ? " · wallet error: " + body.wallet_error.code : "");
        return;
      }
      var error = body && body.error;
      if (error && error.details && error.details.reason) {
        var d = error.details;
        var where = d.line ? "Line " + d.line + (d.column ? ", column " + d.column : "") + ": " : "";
        var text = (d.kind === "syntax" ? "Syntax error. " : d.kind === "limit" ? "Limit reached. " : "Render error. ") +
          where + d.reason;
        if (d.source_line) text += "\n\n  " + d.source_line + (d.column ? "\n  " + " ".repeat(d.column - 1) + "^" : "");
        showError(text);
      } else {
        showError((error && error.message) || ("The server answered HTTP " + answer.status));
      }
    }).catch(function () {
      meta.textContent = "";
      showError("Could not reach the server.");
    });
  });
})();
