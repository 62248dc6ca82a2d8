// /login/wallet: the phone's approval page. "The numbers match: approve" signs with this
// browser's key (development demo: the page plays the wallet app); "The numbers differ: stop"
// fails the sign-in at once and the computer's page shows why (PROTOCOL §4 steps 3–5).
(function () {
  "use strict";
  const W = window.IdpWebAuthn;
  const box = document.getElementById("approve-actions");
  const txn = box.dataset.txn;
  const approveButton = box.querySelector('[data-action="approve"]');
  const stopButton = box.querySelector('[data-action="mismatch"]');
  const status = document.getElementById("approve-status");
  const messages = JSON.parse(document.getElementById("login-messages").textContent);
  const say = (key, code) => { status.textContent = (code && messages[code]) || status.dataset["msg" + key]; };
  const buttons = [approveButton, stopButton].filter(Boolean);
  const enable = (on) => buttons.forEach((b) => { b.disabled = !on; });
  const finish = () => { box.hidden = true; status.focus(); };

  async function approve() {
    enable(false);
    say("Working");
    try {
      const opts = await W.postJSON("/login/options", { txn: txn });
      if (!opts.ok) { say("Failed", opts.body.error === "invalid_transaction" ? "expired" : opts.body.error); finish(); return; }
      let credential;
      try { credential = await W.sign(opts.body.publicKey); } catch (e) { say("Cancelled"); enable(true); return; }
      const res = await W.postJSON("/login/assertion", { txn: txn, credential: credential });
      if (res.ok) { say("Done"); } else { say("Failed", res.body.error); }
      finish();
    } catch (e) { say("Cancelled"); enable(true); }
  }
  async function stop() {
    enable(false);
    try {
      const res = await W.postJSON("/login/mismatch", { txn: txn });
      if (res.ok) { say("Stopped"); } else { say("Failed", res.body.error === "invalid_transaction" ? "expired" : res.body.error); }
      finish();
    } catch (e) { enable(true); }
  }
  stopButton.addEventListener("click", stop);
  stopButton.disabled = false;
  if (approveButton && W.supported()) { approveButton.disabled = false; approveButton.addEventListener("click", approve); }
})();
