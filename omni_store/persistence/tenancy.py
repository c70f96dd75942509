"""The tenant a unit of work is bound to.

``TenantId`` is a distinct type: only the auth layer (a verified token) and trusted internal
callers produce one, and every repository requires one at construction.
"""

from __future__ import annotations

import uuid
from typing import NewType

TenantId = NewType("TenantId", uuid.UUID)


def tenant_id(value: uuid.UUID | str) -> TenantId:
    """Parse a tenant id; raises ``ValueError`` for anything that is not a UUID."""
    return TenantId(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
