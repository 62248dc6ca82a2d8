// /login: passkey on this device, progress of a phone approval (waiting → opened on the
// phone → approved), expiry with "more time", retry, and on a phone the "use another
// device" link (PROTOCOL §4 steps 3–5). Messages come translated from the page.
(function () {
  "use strict";
  const W = window.IdpWebAuthn;
  const statusEl = document.getElementById("status");
  const txn = statusEl.dataset.txn;
  const messages = JSON.parse(document.getElementById("login-messages").textContent);
  // The request options come with the page; without them (an old page) they are fetched.
  const optionsEl = document.getElementById("login-options");
  const embeddedOptions = optionsEl ? JSON.parse(optionsEl.textContent) : null;
  const outcome = document.getElementById("outcome");
  const outcomeText = document.getElementById("outcome-text");
  const ways = document.getElementById("ways");
  const timer = document.getElementById("timer");
  const timerText = document.getElementById("timer-text");
  const button = document.querySelector('[data-action="passkey"]');
  const extendButton = document.querySelector('[data-action="extend"]');
  const progress = document.getElementById("progress");
  const crossDevice = document.getElementById("other-device");
  const otherLink = document.querySelector('[data-action="other-device"]');
  let deadline = Date.now() + Number(statusEl.dataset.expiresIn || 0) * 1000;
  let finished = statusEl.dataset.state !== "pending";
  let busy = false;

  const say = (text) => { statusEl.textContent = text; };
  function fail(code) {
    if (finished) { return; }
    finished = true;
    say("");
    outcomeText.textContent = messages[code] || messages.failed;
    outcome.hidden = false;
    ways.hidden = true;
    timer.hidden = true;
    outcome.focus();
  }
  // Live progress of a phone approval: the current step carries aria-current="step".
  function step(name) {
    progress.querySelectorAll("li").forEach((li) => {
      if (li.dataset.step === name) { li.setAttribute("aria-current", "step"); } else { li.removeAttribute("aria-current"); }
    });
    progress.dataset.step = name;
  }
  function proceed(next) {
    step("approved");
    finished = true;
    say(messages.success);
    window.location.assign(next);
  }

  async function passkey() {
    if (busy || finished) { return; }
    busy = true;
    button.setAttribute("aria-busy", "true");
    say(messages.working);
    try {
      let publicKey = embeddedOptions;
      if (!publicKey) {
        const opts = await W.postJSON("/login/options", { txn: txn });
        if (!opts.ok) { fail(opts.body.error === "invalid_transaction" ? "expired" : opts.body.error); return; }
        publicKey = opts.body.publicKey;
      }
      let credential;
      try {
        credential = await W.sign(publicKey);
      } catch (e) {
        say(messages.cancelled);   // cancelled or no passkey here: the transaction is still usable
        return;
      }
      const res = await W.postJSON("/login/assertion", { txn: txn, credential: credential });
      if (res.ok) { proceed(res.body.next); } else { fail(res.body.error); }
    } catch (e) {
      say(messages.network);
    } finally {
      busy = false;
      button.removeAttribute("aria-busy");
    }
  }

  async function poll() {
    if (finished) { return; }
    try {
      const res = await fetch("/login/status?txn=" + encodeURIComponent(txn), { credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = await res.json();
      if (body.status === "authenticated" && body.next) { proceed(body.next); return; }
      if (body.phone === "opened" && progress.dataset.step !== "opened") { step("opened"); say(messages.opened); }
      if (body.status === "failed") { fail(body.error); return; }
      if (body.status === "expired") { fail("expired"); return; }
      if (!res.ok) { fail(body.error === "invalid_transaction" ? "expired" : body.error); return; }
    } catch (e) { /* network hiccup: keep polling */ }
    setTimeout(poll, 2000);
  }

  function tick() {
    if (finished) { return; }
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    if (left <= 120) {
      const minutes = Math.max(1, Math.ceil(left / 60));
      const text = messages.expiring.replace("{minutes}", String(minutes));
      if (timer.hidden || timerText.textContent !== text) { timerText.textContent = text; }
      timer.hidden = false;
    } else {
      timer.hidden = true;
    }
    setTimeout(tick, 1000);
  }

  async function extend() {
    const res = await W.postJSON("/login/extend", { txn: txn });
    if (!res.ok) { fail(res.body.error === "invalid_transaction" ? "expired" : res.body.error); return; }
    deadline = Date.now() + res.body.expires_in * 1000;
    timer.hidden = true;
    say(messages.extended.replace("{minutes}", String(Math.floor(res.body.expires_in / 60))));
    if (!res.body.can_extend) { extendButton.hidden = true; }
  }

  if (W.supported()) {
    button.disabled = false;
    button.addEventListener("click", passkey);
  } else {
    button.hidden = true;
    say(messages.unsupported);
  }
  extendButton.addEventListener("click", extend);
  otherLink.addEventListener("click", (event) => {
    event.preventDefault();
    crossDevice.classList.add("open");
    crossDevice.focus();
    crossDevice.scrollIntoView({ block: "start" });
  });
  if (!finished) {
    say(messages.pending);
    setTimeout(poll, 2000);
    tick();
  }
})();
