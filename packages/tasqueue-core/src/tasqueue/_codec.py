"""The one place messages become bytes and back: shared encoder and decoders for the hot path."""

from __future__ import annotations

import msgspec

from tasqueue.messages import ChainMessage, GroupMessage, JobMessage

_encoder = msgspec.msgpack.Encoder()

#: Encode any wire type to msgpack.
encode = _encoder.encode
#: Decode a ``JobMessage``; raises ``msgspec.DecodeError`` (or ``ValidationError``) on bad bytes.
decode_job = msgspec.msgpack.Decoder(JobMessage).decode
decode_group = msgspec.msgpack.Decoder(GroupMessage).decode
decode_chain = msgspec.msgpack.Decoder(ChainMessage).decode

# What to catch around a decode: bad msgpack, wrong shapes, and the ValueError/TypeError a
# Struct's __post_init__ raises for a value that decodes but is invalid.
DecodeErrors = (msgspec.DecodeError, ValueError, TypeError)
