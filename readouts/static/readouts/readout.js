// Fetches the AI narrative in its own request so the readout page never waits for a provider.
// Everything is written with textContent (never innerHTML): narratives are untrusted text.
(function () {
  "use strict";
  var box = document.getElementById("narrative");
  if (!box) return;
  var field = function (name) { return box.querySelector('[data-field="' + name + '"]'); };
  var csrf = box.querySelector("input[name=csrfmiddlewaretoken]");
  var timeoutMs = (parseFloat(box.dataset.timeoutS) || 20) * 1000 + 5000;

  function show(data) {
    field("text").textContent = data.text;
    field("source").textContent = data.source;
    field("model").textContent = data.model || "";
    field("model-wrap").hidden = !data.model;
    var when = field("generated_at");
    when.textContent = data.generated_at ? data.generated_at.replace("T", " ").slice(0, 19) + " UTC" : "";
    when.setAttribute("datetime", data.generated_at || "");
    field("stale").hidden = !data.stale;
    var failure = field("failure_reason");
    failure.textContent = data.failure_reason ? "AI narrative unavailable: " + data.failure_reason : "";
    failure.hidden = !data.failure_reason;
    var refresh = box.querySelector(".narrative-refresh");
    if (refresh) refresh.hidden = !data.stale;
    box.dataset.pending = data.pending ? "1" : "0";
  }

  function post(url) {
    var status = field("status");
    status.textContent = "· generating…";
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, timeoutMs);
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrf ? csrf.value : "" },
      signal: controller.signal
    }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (data) {
      show(data);
      status.textContent = "";
    }).catch(function (err) {
      status.textContent = "· could not fetch the AI narrative (" + err.message + "); showing the fallback";
    }).finally(function () { clearTimeout(timer); });
  }

  box.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      post(form.action);
    });
  });
  if (box.dataset.pending === "1") post(box.dataset.url);
})();
