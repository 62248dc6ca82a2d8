// /login/wallet in development: this page plays the phone's wallet and approves with this
// browser's passkey (PROTOCOL §4 steps 3–4, cross-device).
(function () {
  "use strict";
  const W = window.IdpWebAuthn;
  const button = document.querySelector('[data-action="approve"]');
  const status = document.getElementById("approve-status");
  const messages = JSON.parse(document.getElementById("login-messages").textContent);
  const say = (key, code) => { status.textContent = (code && messages[code]) || status.dataset["msg" + key]; };
  async function approve() {
    button.disabled = true;
    say("Working");
    try {
      const opts = await W.postJSON("/login/options", { txn: button.dataset.txn });
      if (!opts.ok) { say("Failed", opts.body.error === "invalid_transaction" ? "expired" : opts.body.error); return; }
      let credential;
      try { credential = await W.sign(opts.body.publicKey); } catch (e) { say("Cancelled"); button.disabled = false; return; }
      const res = await W.postJSON("/login/assertion", { txn: button.dataset.txn, credential: credential });
      if (res.ok) { say("Done"); button.hidden = true; } else { say("Failed", res.body.error); }
    } catch (e) { say("Cancelled"); button.disabled = false; }
  }
  if (W.supported()) { button.disabled = false; button.addEventListener("click", approve); }
})();
