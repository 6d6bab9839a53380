"""Context by people: an operator sets or corrects a batch's context from the batch page.

It is the event of ``uns context set`` (:func:`uns.client.context.publish_context`): on
``<engine.prefix>/_context/<path>`` to the broker of ``broker.url``, with the
authenticated user as its ``user``, the reason the operator gives (required), ``source``
``uns-web``, signed by the server's key (so an engine with ``context.require_signature``
takes it), and the engine's acknowledgement awaited.  The path must be one of the
batch's units or below one; the keys are the context keys (``batch_id``, ``phase``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from uns.client.context import publish_context
from uns.errors import UserError
from uns.users.roles import require
from uns.users.sessions import Session

if TYPE_CHECKING:
    from uns.review.workspace import Workspace

__all__ = ["set_batch_context"]

#: seconds to wait for the engine's acknowledgement
ACK_WAIT_S: Final = 10.0
_MAX_VALUE: Final = 1000
_MAX_KEYS: Final = 20


def _text(
    body: Mapping[str, Any], name: str, *, required: bool = True, limit: int = _MAX_VALUE
) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise UserError(f"{name.replace('_', ' ')} is required", field=name)
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise UserError(f"{name.replace('_', ' ')} must be text of at most {limit} characters", field=name)
    return value


def set_batch_context(
    ws: Workspace, session: Session, batch_id: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """``POST /api/batches/{id}/context`` ``{"path", "set": {key: value}, "clear": [key],
    "ts", "reason"}``: publish the event, return the engine's answer."""
    who = session.identity
    require(who.user, who.roles, "set_context")
    review = ws.review(batch_id)  # an unknown batch: 404
    units = review.document["batch"]["units"]
    path = _text(body, "path") or ""
    if not any(path == u or path.startswith(u + "/") for u in units):
        raise UserError(
            f"the path must be one of the batch's units ({', '.join(units)}) or below one", field="path"
        )
    reason = _text(body, "reason")
    values = body.get("set") or {}
    clear = body.get("clear") or []
    if not isinstance(values, dict) or not isinstance(clear, list):
        raise UserError("set is an object of key: value, clear a list of keys", field="set")
    if not values and not clear:
        raise UserError("set a key or clear one", field="set")
    if len(values) + len(clear) > _MAX_KEYS:
        raise UserError(f"at most {_MAX_KEYS} keys at once", field="set")
    pairs = []
    for key, value in values.items():
        if (
            not isinstance(key, str)
            or not key
            or "=" in key
            or not isinstance(value, str)
            or len(value) > _MAX_VALUE
        ):
            raise UserError(f"bad context key or value {str(key)[:40]!r}", field="set")
        pairs.append(f"{key}={value}")
    if not all(isinstance(k, str) and k for k in clear):
        raise UserError("clear is a list of context keys", field="clear")
    ts = _text(body, "ts", required=False, limit=40)
    cfg = ws.cfg
    result = publish_context(
        cfg.broker.settings(), path, pairs, [str(k) for k in clear], user=who.user, reason=reason, ts=ts,
        prefix=cfg.engine.prefix, wait=ACK_WAIT_S, key=(ws.signing.key.name, ws.signing.key.private),
        source="uns-web",
    )  # fmt: skip
    ack = result.ack
    return {
        "topic": result.topic,
        "event_id": result.event_id,
        "status": ack.status if ack is not None else "unanswered",
        "reason": ack.reason if ack is not None else f"no engine answered within {ACK_WAIT_S:g} s",
    }
