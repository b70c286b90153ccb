"""schemathesis hooks for scripts/fuzz (loaded through SCHEMATHESIS_HOOKS).

Signs every request to the WeChat push endpoint with the fuzz app's push token, so that
fuzzed bodies get past the signature check into the push parser (plain mode) and the
decryptor (safe mode: the fuzzed body becomes the `Encrypt` field). A fuzzed timestamp that
is a number is kept (old or absurd ones test the replay guard); any other is replaced by
the current time so the push counts as fresh.
"""

import hashlib
import json
import os
import re
import time

import schemathesis

PUSH_TOKEN = os.environ["FUZZ_PUSH_TOKEN"]


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8", "surrogatepass")).hexdigest()


@schemathesis.hook
def before_call(context, case, kwargs):
    if not case.operation.path.startswith("/wechat/") or not isinstance(case.query, dict):
        return
    query = case.query
    timestamp = query.get("timestamp")
    if not (isinstance(timestamp, str) and re.fullmatch(r"-?[0-9]{1,20}", timestamp)):
        timestamp = query["timestamp"] = str(int(time.time()))
    nonce = query.get("nonce")
    if not isinstance(nonce, str):
        nonce = query["nonce"] = "fuzz"
    if case.operation.method.upper() == "POST" and "encrypt_type" in query:
        query["encrypt_type"] = "aes"
        # The body is described as raw bytes: schemathesis may hand it over as bytes.
        body = case.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        encrypt = body if isinstance(body, str) else ""
        case.body = json.dumps({"ToUserName": "gh_fuzz", "Encrypt": encrypt})
        query["msg_signature"] = signature(PUSH_TOKEN, timestamp, nonce, encrypt)
    else:
        query["signature"] = signature(PUSH_TOKEN, timestamp, nonce)
