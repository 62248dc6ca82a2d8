// /account sign-in with a device key (a dedicated WebAuthn ceremony, no RP involved).
(function () {
  "use strict";
  const W = window.IdpWebAuthn;
  const button = document.querySelector('[data-action="passkey"]');
  const status = document.getElementById("status");
  const outcome = document.getElementById("outcome");
  const outcomeText = document.getElementById("outcome-text");
  const messages = JSON.parse(document.getElementById("login-messages").textContent);
  const say = (key) => { status.textContent = status.dataset["msg" + key] || ""; };
  function fail(code) {
    say("");
    outcomeText.textContent = messages[code] || messages.failed;
    outcome.hidden = false;
    outcome.focus();
  }
  async function signIn() {
    button.disabled = true;
    outcome.hidden = true;
    say("Working");
    try {
      const opts = await W.postJSON("/account/login/options", {});
      if (!opts.ok) { fail(opts.body.error); return; }
      let credential;
      try { credential = await W.sign(opts.body.publicKey); } catch (e) { say("Cancelled"); return; }
      const res = await W.postJSON("/account/login/assertion", { state: opts.body.state, credential: credential });
      if (res.ok) { say("Success"); window.location.assign(res.body.next); return; }
      fail(res.body.error);
    } catch (e) {
      fail("failed");
    } finally {
      button.disabled = false;
    }
  }
  if (W.supported()) { button.disabled = false; button.addEventListener("click", signIn); } else { say("Unsupported"); }
})();
