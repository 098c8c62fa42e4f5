"""Secrets encryption at rest: envelope encryption with AES-256-GCM.

Three layers of keys:

* **Master keys** come from the deployment (``GRISTMILL_MASTER_KEY`` or
  ``GRISTMILL_MASTER_KEY_FILE``, see ``master``) and live only in memory, in a
  ``MasterKeyring``. They wrap data keys and nothing else.
* **Data keys**: each workspace has its own random 32-byte keys, stored only wrapped
  (``StoredWorkspaceKeys`` holding ``WrappedKey`` values, JSON-safe). One is active;
  older ones are kept to decrypt what they encrypted. ``WorkspaceKeys`` is the
  unwrapped, in-memory form.
* **Secret values** are encrypted with the workspace's active data key, a fresh 96-bit
  random nonce each time, and associated data ``workspace + "\\0" + path``: a
  ciphertext copied to another workspace or another path does not decrypt. The result
  is ``$gm1$<base64url>`` (see ``ciphertext`` for the byte layout: version, data key
  id, nonce, GCM ciphertext and tag).

Typical use::

    keyring = MasterKeyring.from_env_or_file()          # once per process
    keys = WorkspaceKeys.create("main")                 # a new workspace
    stored = keys.wrap(keyring)                         # -> store encode_stored_keys(stored)
    keys = WorkspaceKeys.unwrap(stored, keyring)        # later, after loading
    text = encrypt_secret(keys, "u/alice/token", "s3cr3t")
    decrypt_secret(keys, "u/alice/token", text)         # -> "s3cr3t"

Master-key rotation (a master key leaked, or on a schedule):

1. Generate a key and put it *first* in the keyring, keeping the old one after it
   (``GRISTMILL_MASTER_KEY="k2:<new>,k1:<old>"``); restart. New data keys are now
   wrapped by ``k2``; data keys wrapped by ``k1`` still unwrap.
2. For every workspace, store ``rewrap_stored_keys(stored, keyring)``: the same data
   keys wrapped by ``k2`` (idempotent; keys already under ``k2`` are kept). Secret
   values are untouched: their data keys did not change.
3. Remove ``k1`` from the keyring. Any data key still wrapped by it now fails with an
   error naming ``k1``.

Data-key rotation (a data key may have leaked, or on a schedule):

1. ``keys = keys.new_data_key()`` and store ``keys.wrap(keyring)``: new secrets use the
   new id; old ciphertexts still decrypt with the old key, which stays.
2. Move old ciphertexts to the active key, lazily when a secret is read or written, or
   all at once by a command: ``reencrypt(keys, path, text)`` for each secret of the
   workspace (``needs_reencrypt`` tells from the header alone which rows to touch;
   ``reencrypt`` returns a current value unchanged).
3. When no ciphertext names the old id, ``keys = keys.without_key(old_id)`` and store
   the wrapped form again.

Errors: malformed or undecryptable secret values raise ``InvalidRequest`` naming the
secret's path; a malformed master key configuration raises ``InvalidRequest`` naming
the variable; a missing master key or a data key that fails to unwrap is an operator
problem and raises ``GristmillError``. No message or ``repr`` includes key material or
plaintext.
"""

from gristmill.common.secrets.cipher import (
    decrypt_secret,
    encrypt_secret,
    needs_reencrypt,
    reencrypt,
)
from gristmill.common.secrets.ciphertext import (
    FORMAT_VERSION,
    TEXT_PREFIX,
    SealedSecret,
    decode,
    decode_text,
    encode,
    encode_text,
)
from gristmill.common.secrets.data_keys import (
    StoredWorkspaceKeys,
    WorkspaceKeys,
    decode_stored_keys,
    encode_stored_keys,
    rewrap_stored_keys,
)
from gristmill.common.secrets.master import (
    KEY_BYTES,
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    MasterKeyring,
    WrappedKey,
)

__all__ = [
    "FORMAT_VERSION",
    "KEY_BYTES",
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "TEXT_PREFIX",
    "MasterKeyring",
    "SealedSecret",
    "StoredWorkspaceKeys",
    "WorkspaceKeys",
    "WrappedKey",
    "decode",
    "decode_stored_keys",
    "decode_text",
    "decrypt_secret",
    "encode",
    "encode_stored_keys",
    "encode_text",
    "encrypt_secret",
    "needs_reencrypt",
    "reencrypt",
    "rewrap_stored_keys",
]
