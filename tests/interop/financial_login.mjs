// panva/openid-client v6 as a bank's relying party: private_key_jwt, PAR and DPoP (FAPI 2.0).
//
// Driven by tests/test_interop_openid_client.py over stdin/stdout, one line each:
//   -> AUTHORIZE <url>      the browser must go here (the test logs the person in)
//   <- CALLBACK <url>       where the browser landed at the RP
//   -> RESULT <json>        what the client saw: token type, ID token claims, UserInfo, refresh
// Configuration in the environment: IDP_ISSUER, CLIENT_ID, CLIENT_JWK (private, ES256),
// REDIRECT_URI. Any failure exits 1 with the error on stderr.
import * as client from "openid-client";
import readline from "node:readline";

const issuer = new URL(process.env.IDP_ISSUER);
const jwk = JSON.parse(process.env.CLIENT_JWK);
const redirectUri = process.env.REDIRECT_URI;

const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const privateKey = await crypto.subtle.importKey(
  "jwk", jwk, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
const config = await client.discovery(
  issuer, process.env.CLIENT_ID,
  { id_token_signed_response_alg: "ES256", redirect_uris: [redirectUri] },
  client.PrivateKeyJwt({ key: privateKey, kid: jwk.kid }),
  { execute: [client.allowInsecureRequests] }, // loopback http in the test deployment only
);
const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair("ES256"));

const codeVerifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const authorizationUrl = await client.buildAuthorizationUrlWithPAR(config, {
  redirect_uri: redirectUri,
  scope: "openid profile offline_access",
  prompt: "consent",
  code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: "S256",
  state,
  nonce,
}, { DPoP: dpop });
console.log(`AUTHORIZE ${authorizationUrl.href}`);

const answer = await nextLine();
if (!answer.startsWith("CALLBACK ")) throw new Error(`expected CALLBACK, got ${answer}`);
const tokens = await client.authorizationCodeGrant(config, new URL(answer.slice(9)), {
  pkceCodeVerifier: codeVerifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true,
}, undefined, { DPoP: dpop });
const claims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP: dpop });
let refreshed = null;
if (tokens.refresh_token) {
  const again = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP: dpop });
  refreshed = { token_type: again.token_type, has_access_token: Boolean(again.access_token) };
}
console.log(`RESULT ${JSON.stringify({
  token_type: tokens.token_type,
  access_token: tokens.access_token,
  id_token_header: JSON.parse(Buffer.from(tokens.id_token.split(".")[0], "base64url").toString()),
  claims,
  userinfo,
  refreshed,
})}`);
lines.close();
