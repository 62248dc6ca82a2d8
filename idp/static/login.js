// Passkey sign-in and progress polling for /login (PROTOCOL §4 steps 3–5).
(function () {
  "use strict";
  const statusEl = document.getElementById("status");
  const txn = statusEl.dataset.txn;
  const say = (key) => { statusEl.textContent = statusEl.dataset["msg" + key]; };
  const b64u = {
    toBytes: (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4)), (c) => c.charCodeAt(0)),
    fromBytes: (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
  };
  function requestOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    const o = Object.assign({}, json, { challenge: b64u.toBytes(json.challenge) });
    o.allowCredentials = (json.allowCredentials || []).map((c) => Object.assign({}, c, { id: b64u.toBytes(c.id) }));
    return o;
  }
  function credentialJSON(cred) {
    if (cred.toJSON) { return cred.toJSON(); }
    const r = cred.response;
    return { id: cred.id, rawId: b64u.fromBytes(cred.rawId), type: cred.type, response: {
      clientDataJSON: b64u.fromBytes(r.clientDataJSON), authenticatorData: b64u.fromBytes(r.authenticatorData),
      signature: b64u.fromBytes(r.signature), userHandle: r.userHandle ? b64u.fromBytes(r.userHandle) : null } };
  }
  async function post(url, body) {
    const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), credentials: "same-origin" });
    return { ok: res.ok, body: await res.json() };
  }
  async function passkey() {
    try {
      const opts = await post("/login/options", { txn });
      if (!opts.ok) { say("Error"); return; }
      const cred = await navigator.credentials.get({ publicKey: requestOptions(opts.body.publicKey) });
      const res = await post("/login/assertion", { txn, credential: credentialJSON(cred) });
      if (res.ok) { window.location.assign(res.body.next); } else { say("Failed"); }
    } catch (e) { say("Error"); }
  }
  async function poll() {
    try {
      const res = await fetch("/login/status?txn=" + encodeURIComponent(txn), { credentials: "same-origin" });
      const body = await res.json();
      if (body.status === "authenticated") { window.location.assign(body.next); return; }
      if (body.status === "failed") { say("Failed"); return; }
      if (body.status === "expired") { say("Expired"); return; }
    } catch (e) { /* network hiccup: keep polling */ }
    setTimeout(poll, 2000);
  }
  const button = document.querySelector('[data-action="passkey"]');
  if (button) { button.addEventListener("click", passkey); }
  say("Pending");
  setTimeout(poll, 2000);
})();
