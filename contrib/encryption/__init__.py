"""End-to-end encryption of message bodies with AES-GCM: :class:`AESGCMCodec`.

Every body the engine writes (history records, activity tasks, workflow outcomes, outbox rows)
is encrypted by the client or worker that writes it and decrypted by the one that reads it;
the NATS server only ever stores ciphertext. Subjects (workflow ids, task queue names) and
headers (``Df-Event``, ``Df-Status``) stay plain text. Needs ``pip install
"durablefuture[crypto]"``. See ``docs/encryption.md``.

Configure it in code, ``App("shop", codec=AESGCMCodec(key))``, or with no code at all::

    DF_CODEC=dfcore.contrib.encryption:AESGCMCodec
    DF_ENCRYPTION_KEY=<base64 key>           # the same in every client and worker
    DF_ENCRYPTION_OLD_KEYS=<key>,<key>       # optional: former keys, still read

Generate a key with::

    python -c "from dfcore.contrib.encryption import AESGCMCodec; print(AESGCMCodec.generate_key())"

Wire format, version 1 (``len(json) + 36`` bytes)::

    offset  size  field
    0       3     magic b"DFE"
    3       1     format version, 0x01
    4       4     key id: the first 4 bytes of SHA-256(key)
    8       12    nonce, random for every message (os.urandom)
    20      n+16  AES-GCM ciphertext of the n JSON bytes, then the 16-byte tag

Bytes 0-7 are authenticated as associated data, so the version and key id cannot be altered.
The key id tells a reader which key was used: a reader that has it decrypts; a reader that
does not raises :class:`dfcore.CodecKeyError` (a configuration problem of that process, the
message is intact); a body that is not in this format or fails authentication raises
:class:`DecryptionError` (corrupt, forged, or written without the codec).

With random 96-bit nonces, encrypt at most about 2**32 messages with one key (NIST SP 800-38D),
then rotate it.
"""

from ._aesgcm import AESGCMCodec, DecryptionError
from ._keys import KEY_ENV, OLD_KEYS_ENV

__all__ = ["KEY_ENV", "OLD_KEYS_ENV", "AESGCMCodec", "DecryptionError"]
