// The demo wallet: enrol this browser's passkey with a TEST My Number Card (PROTOCOL §3).
// begin → navigator.credentials.create → the TEST card signs the binding → finish (pending)
// → navigator.credentials.get over the activation challenge → activate (with "I lost my old
// phone" ticked, activation also stops every other device of the account: recovery by card).
(function () {
  "use strict";
  const W = window.IdpWebAuthn;
  const form = document.getElementById("enrol-form");
  const button = form.querySelector('[data-action="enrol"]');
  const status = document.getElementById("enrol-status");
  const errorBox = document.getElementById("enrol-error");
  const errorText = document.getElementById("enrol-error-text");
  const done = document.getElementById("enrol-done");
  const messages = JSON.parse(document.getElementById("wallet-messages").textContent);
  const say = (key) => { status.textContent = messages[key]; };
  function fail(detail) {
    status.textContent = "";
    errorText.textContent = messages.failed + " " + detail;
    errorBox.hidden = false;
    errorBox.focus();
  }
  // What the person will recognise on the account page ("Chrome on Linux"); a real wallet app
  // sends its phone model. Only a label: nothing is decided on it.
  function modelHint() {
    const ua = navigator.userAgent;
    const browser = /Edg\//.test(ua) ? "Edge" : /Chrome\//.test(ua) ? "Chrome" : /Firefox\//.test(ua) ? "Firefox"
      : /Safari\//.test(ua) ? "Safari" : "Browser";
    const platform = (navigator.userAgentData && navigator.userAgentData.platform) || navigator.platform || "";
    return (browser + (platform ? " / " + platform : "")).slice(0, 120);
  }
  const describe = (res) => (res.body.error_description || res.body.error || ("HTTP " + res.status));

  async function enrol(event) {
    event.preventDefault();
    const persona = form.querySelector('input[name="persona"]:checked').value;
    button.disabled = true;
    errorBox.hidden = true;
    done.hidden = true;
    try {
      say("begin");
      const begun = await W.postJSON("/enroll/begin", {});
      if (!begun.ok) { fail(describe(begun)); return; }
      say("create");
      let credential;
      try { credential = await W.create(begun.body.publicKey); } catch (e) { status.textContent = messages.cancelled; return; }
      say("card");
      const signed = await W.postJSON("/demo/card/sign", { enrollment_id: begun.body.enrollment_id, persona: persona, credential: credential });
      if (!signed.ok) { fail(describe(signed)); return; }
      say("finish");
      const finished = await W.postJSON("/enroll/finish", { enrollment_id: begun.body.enrollment_id, credential: credential, jpki: signed.body.jpki, model_hint: modelHint() });
      if (!finished.ok) { fail(describe(finished)); return; }
      say("activate");
      let assertion;
      try { assertion = await W.sign(finished.body.activation.publicKey); } catch (e) { status.textContent = messages.cancelled; return; }
      const recover = form.querySelector("#recover").checked;
      const activated = await W.postJSON("/enroll/activate", { enrollment_id: begun.body.enrollment_id, credential: assertion, revoke_other_devices: recover });
      if (!activated.ok) { fail(describe(activated)); return; }
      say("done");
      document.getElementById("enrol-serial").textContent = activated.body.serial;
      document.getElementById("enrol-recovered").hidden = !(recover && activated.body.revoked_devices > 0);
      done.hidden = false;
      done.focus();
    } catch (e) {
      fail(String(e));
    } finally {
      button.disabled = false;
    }
  }
  if (W.supported()) { button.disabled = false; form.addEventListener("submit", enrol); }
})();
