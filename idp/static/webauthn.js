// Shared WebAuthn helpers: JSON options in, JSON credentials out (WebAuthn L3 §5.1.8, §5.1.9),
// with a fallback for browsers without parse*OptionsFromJSON / toJSON.
(function () {
  "use strict";
  const b64u = {
    toBytes: (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4)), (c) => c.charCodeAt(0)),
    fromBytes: (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
  };
  const descriptors = (list) => (list || []).map((c) => Object.assign({}, c, { id: b64u.toBytes(c.id) }));

  function requestOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, { challenge: b64u.toBytes(json.challenge), allowCredentials: descriptors(json.allowCredentials) });
  }
  function creationOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: b64u.toBytes(json.challenge),
      user: Object.assign({}, json.user, { id: b64u.toBytes(json.user.id) }),
      excludeCredentials: descriptors(json.excludeCredentials),
    });
  }
  function credentialJSON(cred) {
    if (cred.toJSON) { return cred.toJSON(); }
    const r = cred.response;
    const response = { clientDataJSON: b64u.fromBytes(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = b64u.fromBytes(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = b64u.fromBytes(r.authenticatorData);
      response.signature = b64u.fromBytes(r.signature);
      response.userHandle = r.userHandle ? b64u.fromBytes(r.userHandle) : null;
    }
    return { id: cred.id, rawId: b64u.fromBytes(cred.rawId), type: cred.type, response: response, clientExtensionResults: {} };
  }
  async function postJSON(url, body) {
    const res = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await res.json(); } catch (e) { data = { error: "network" }; }
    return { ok: res.ok, status: res.status, body: data };
  }
  async function sign(publicKeyJSON) {
    const cred = await navigator.credentials.get({ publicKey: requestOptions(publicKeyJSON) });
    return credentialJSON(cred);
  }
  async function create(publicKeyJSON) {
    const cred = await navigator.credentials.create({ publicKey: creationOptions(publicKeyJSON) });
    return credentialJSON(cred);
  }
  const supported = () => !!(window.PublicKeyCredential && navigator.credentials);
  window.IdpWebAuthn = { sign: sign, create: create, postJSON: postJSON, supported: supported };
})();
