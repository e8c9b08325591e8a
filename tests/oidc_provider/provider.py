"""The OpenID Connect provider for the tests: `oidc-provider-mock` (PyPI, pinned by
setup.sh) on 127.0.0.1, plus a few test-only endpoints to forge bad ID tokens.

    <venv>/bin/python provider.py [--port N] [--require-nonce]
        [--require-client-registration] [--no-refresh-token] [--token-max-age SECONDS]

Prints "LISTENING <port>" on stdout once it listens (port 0, the default, picks a free
one); logs go to stderr.

What the mock gives (version 0.3.4, read from its source):
- discovery at /.well-known/openid-configuration; "issuer" is the request's Host
  (http://127.0.0.1:PORT when asked at 127.0.0.1, so always use 127.0.0.1);
- authorization code flow only; RS256 ID tokens (no "kid", "aud" an array, "typ": "JWT");
- any client_id, secret, redirect_uri and token endpoint auth method, unless
  --require-client-registration (then POST /oauth2/clients registers one);
- PUT /users/<sub> with a JSON object of claims; standard claims (name,
  preferred_username, email, ...) only for their scope (profile, email, ...), any other
  claim (e.g. "groups") always;
- a consent page at the authorization endpoint: a form posting `sub` to the same URL;
- an end session endpoint (a form; POST /oauth2/end_session/confirm redirects).
PKCE is not enforced (code_challenge / code_verifier are ignored), and nonces are not
checked for reuse.

Added here, for the tests (JSON in, JSON out):
- POST /test/tamper: how to spoil the NEXT ID token issued (then forgotten):
    {"claims": {"aud": "other", "nonce": null}}  set claims; null removes one
    {"header": {"kid": "x"}}                      set header fields; null removes one
    {"exp_offset": -120}                          exp = now - 120 (iat an hour before exp)
    {"iat_offset": 600}                           iat (and auth_time) = now + 600
    {"foreign_key": true}                         signed by an RSA key the JWKS lacks
    {"alg": "HS256", "hmac_secret": "..."}        HMAC-SHA256 (default secret below);
                                                  "hmac_secret": "$public_key_pem" signs
                                                  with the JWKS key's PEM (alg confusion)
    {"alg": "none"}                               unsigned: header.payload.
  Keys combine; unknown keys are refused (400) so a typo can't yield a valid token.
- POST /test/reset: forgets a pending tamper.
- GET /test/last-id-token: {"id_token", "header", "claims"} of the last one issued.
- GET /test/health: 200.
"""

import argparse
import base64
import copy
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import warnings
from datetime import timedelta

# Plain http on 127.0.0.1: authlib refuses it otherwise. Set before authlib is imported.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
# The mock uses authlib APIs authlib now calls deprecated (warned at import and per token;
# authlib.deprecate turns its warnings on when imported, so it goes first).
import authlib.deprecate  # noqa: E402

warnings.simplefilter("ignore", DeprecationWarning)

import authlib.oidc.core.grants.code as oidc_code_grant  # noqa: E402
import flask  # noqa: E402
import jinja2  # noqa: E402
import oidc_provider_mock  # noqa: E402
import werkzeug.debug  # noqa: E402
import werkzeug.serving  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from joserfc.jwk import RSAKey, import_key  # noqa: E402

DEFAULT_HMAC_SECRET = "notebox-test-hmac-secret-0123456789abcdef"

# The mock's pages load Pico CSS from a CDN; these replace the two templates that do, so
# that no page refers to anything off this machine.
LOCAL_TEMPLATES = {
    "_base.html": (
        "<!doctype html>\n<html lang=\"en\">\n<meta charset=\"utf-8\">\n"
        "<title>OIDC test provider</title>\n"
        "<main>{% block content %}{{ content }}{% endblock %}</main>\n</html>\n"
    ),
    "error.html": (
        "<!doctype html>\n<meta charset=\"utf-8\">\n"
        "<main><h1>Error: {{ name }}</h1><p>{{ description }}</p></main>\n"
    ),
}

TAMPER_KEYS = {"claims", "header", "exp_offset", "iat_offset", "foreign_key", "alg", "hmac_secret"}
TAMPER_ALGS = {"RS256", "HS256", "none"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


class Forge:
    """Holds the pending tamper and the last ID token; stands in for the `jwt` module
    that authlib's OpenIDCode grant signs the ID token with (its only use there is
    `jwt.encode(header, claims, private_key, [alg])`)."""

    def __init__(self, real_jwt):
        self._real = real_jwt
        self._lock = threading.Lock()
        self._pending = None
        self._last = None
        self._foreign_key = None  # made on first use: RSA key generation takes a while
        self.public_key_pem = None  # set by main() once the mock's key exists

    def set(self, tamper):
        with self._lock:
            self._pending = tamper

    def reset(self):
        with self._lock:
            self._pending = None

    def last(self):
        with self._lock:
            return self._last

    def foreign_key(self):
        if self._foreign_key is None:
            self._foreign_key = RSAKey.generate_key(2048)
        return self._foreign_key

    # The shim: called by authlib's OpenIDToken.encode_id_token.
    def encode(self, header, claims, key, algorithms=None, *args, **kwargs):
        with self._lock:
            tamper, self._pending = self._pending, None
        header = {"typ": "JWT", **header}
        claims = dict(claims)
        if tamper:
            sys.stderr.write(f"oidc test provider: tampering ID token with {json.dumps(tamper)}\n")
            header, claims, token = self._tampered(tamper, header, claims, key)
        else:
            token = self._real.encode(header, claims, key, algorithms, *args, **kwargs)
        with self._lock:
            self._last = {"id_token": token, "header": header, "claims": claims}
        return token

    def _tampered(self, tamper, header, claims, key):
        now = int(time.time())
        if "exp_offset" in tamper:
            claims["exp"] = now + int(tamper["exp_offset"])
            claims["iat"] = claims["exp"] - 3600
            claims["auth_time"] = claims["iat"]
        if "iat_offset" in tamper:
            claims["iat"] = now + int(tamper["iat_offset"])
            claims["auth_time"] = claims["iat"]
        for name, value in (tamper.get("claims") or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        alg = tamper.get("alg", "RS256")
        header["alg"] = alg
        for name, value in (tamper.get("header") or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value

        if alg == "RS256":
            signing_key = self.foreign_key() if tamper.get("foreign_key") else key
            # joserfc adds "typ" only when absent, so the header goes through as it is.
            token = self._real.encode(header, claims, signing_key, ["RS256"])
            return header, claims, token

        signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
        if alg == "none":
            return header, claims, signing_input + "."
        # HS256, by hand: joserfc would refuse some keys (a PEM) as HMAC secrets.
        secret = tamper.get("hmac_secret", DEFAULT_HMAC_SECRET)
        if secret == "$public_key_pem":
            secret = self.public_key_pem
        mac = hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256)
        return header, claims, signing_input + "." + b64url(mac.digest())


def validate_tamper(body):
    """The tamper request's problem, or None when it's one we can apply."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unknown = set(body) - TAMPER_KEYS
    if unknown:
        return f"unknown keys {sorted(unknown)}; known: {sorted(TAMPER_KEYS)}"
    for name in ("claims", "header"):
        if name in body and not isinstance(body[name], dict):
            return f"{name} must be an object"
    for name in ("exp_offset", "iat_offset"):
        if name in body and (not isinstance(body[name], int) or isinstance(body[name], bool)):
            return f"{name} must be an integer"
    if "alg" in body and body["alg"] not in TAMPER_ALGS:
        return f"alg must be one of {sorted(TAMPER_ALGS)}"
    if "foreign_key" in body and not isinstance(body["foreign_key"], bool):
        return "foreign_key must be true or false"
    if body.get("foreign_key") and body.get("alg", "RS256") != "RS256":
        return "foreign_key goes with alg RS256 only"
    if "hmac_secret" in body and not isinstance(body["hmac_secret"], str):
        return "hmac_secret must be a string"
    return None


def build_app(args, forge):
    app = oidc_provider_mock.app(
        require_client_registration=args.require_client_registration,
        require_nonce=args.require_nonce,
        issue_refresh_token=not args.no_refresh_token,
        access_token_max_age=timedelta(seconds=args.token_max_age),
    )
    # The mock turns on Flask debug mode and wraps the app in Werkzeug's interactive
    # debugger; a test server wants neither (errors become plain 500s, logged to stderr).
    app.debug = False
    if isinstance(app.wsgi_app, werkzeug.debug.DebuggedApplication):
        app.wsgi_app = app.wsgi_app.app
    # Local templates first, the mock's own for the rest.
    app.jinja_loader = jinja2.ChoiceLoader([jinja2.DictLoader(LOCAL_TEMPLATES), app.jinja_loader])

    @app.post("/test/tamper")
    def test_tamper():
        body = flask.request.get_json(silent=True)
        problem = validate_tamper(body)
        if problem:
            return flask.jsonify({"error": problem}), 400
        forge.set(copy.deepcopy(body))
        return flask.jsonify({"pending": body})

    @app.post("/test/reset")
    def test_reset():
        forge.reset()
        return flask.jsonify({"pending": None})

    @app.get("/test/last-id-token")
    def test_last_id_token():
        last = forge.last()
        if last is None:
            return flask.jsonify({"error": "no ID token issued yet"}), 404
        return flask.jsonify(last)

    @app.get("/test/health")
    def test_health():
        return flask.jsonify({"ok": True})

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--require-nonce", action="store_true",
                        help="refuse authorization requests without a nonce")
    parser.add_argument("--require-client-registration", action="store_true",
                        help="only clients registered at POST /oauth2/clients")
    parser.add_argument("--no-refresh-token", action="store_true")
    parser.add_argument("--token-max-age", type=int, default=3600,
                        help="seconds until access and ID tokens expire")
    args = parser.parse_args()

    if not hasattr(oidc_code_grant, "jwt") or not hasattr(oidc_code_grant.jwt, "encode"):
        sys.exit("oidc test provider: authlib.oidc.core.grants.code has no `jwt` to wrap; "
                 "authlib changed (setup.sh pins the version this was written for)")
    forge = Forge(oidc_code_grant.jwt)
    oidc_code_grant.jwt = forge

    app = build_app(args, forge)
    server = werkzeug.serving.make_server("127.0.0.1", args.port, app, threaded=True)

    # The signing key lives in the mock's per-app storage, made when the app was set up;
    # reach it through a request context (its `storage` reads flask.g).
    with app.test_request_context("/"):
        app.preprocess_request()
        jwk = flask.g.oidc_provider_mock_storage.jwk.as_dict(is_private=False)
    public = import_key(jwk, "RSA").get_op_key("verify")
    forge.public_key_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")

    print(f"LISTENING {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
