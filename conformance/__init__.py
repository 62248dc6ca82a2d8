"""A black-box OpenID Connect OP conformance runner, mirroring the OpenID Foundation's
oidcc Basic, Config, Dynamic and logout test plans by their official module names.

It talks to the IdP only over HTTP (discovery, registration, the browser flow, the token
and UserInfo endpoints) with its own client stack (authlib's client, jwcrypto, the
software authenticator and test JPKI card of ``tests/support``). See conformance/README.md.
"""
