"""The ACLs a worker needs in each delivery mode, and granting or revoking them as a super user.

``worker_acls`` is the list docs/security.md gives; the ACL tests run the worker with exactly
these and with each one taken away. WRITE and READ imply DESCRIBE in Kafka's authorizer, so none
of these needs a DESCRIBE beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)


@dataclass(frozen=True)
class Acl:
    """ALLOW ``operation`` on resource ``kind`` ``name`` (a literal name, or a prefix) for ``principal``."""

    principal: str
    kind: ResourceType
    name: str
    operation: AclOperation
    pattern: ResourcePatternType = ResourcePatternType.LITERAL

    def binding(self) -> AclBinding:
        return AclBinding(self.kind, self.name, self.pattern, self.principal, "*", self.operation,
                          AclPermissionType.ALLOW)

    def describe(self) -> str:
        return f"{self.operation.name} on {self.kind.name.lower()} {self.name!r}"


def worker_acls(principal: str, topic: str, group: str, *, transactional_id: str | None = None,
                outputs: Iterable[str] | None = None) -> list[Acl]:
    """Read the input and the group, write every output topic; with a transactional id, write it too."""
    outputs = list(outputs) if outputs is not None else [f"{topic}.labels", f"{topic}.dlq"]
    acls = [Acl(principal, ResourceType.TOPIC, topic, AclOperation.READ),
            Acl(principal, ResourceType.GROUP, group, AclOperation.READ),
            *(Acl(principal, ResourceType.TOPIC, output, AclOperation.WRITE) for output in outputs)]
    if transactional_id is not None:
        acls.append(Acl(principal, ResourceType.TRANSACTIONAL_ID, transactional_id, AclOperation.WRITE))
    return acls


def scaler_acls(principal: str, topic: str, group: str) -> list[Acl]:
    """What the KEDA Kafka scaler reads: the topic's partitions and end offsets, the group's committed offsets."""
    return [Acl(principal, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
            Acl(principal, ResourceType.GROUP, group, AclOperation.DESCRIBE)]


def grant(admin_config: dict[str, str], acls: Iterable[Acl]) -> None:
    admin = AdminClient(admin_config)
    for future in admin.create_acls([acl.binding() for acl in acls]).values():
        future.result(timeout=30)


def revoke(admin_config: dict[str, str], acls: Iterable[Acl]) -> None:
    admin = AdminClient(admin_config)
    filters = [AclBindingFilter(acl.kind, acl.name, acl.pattern, acl.principal, "*", acl.operation,
                                AclPermissionType.ALLOW) for acl in acls]
    for future in admin.delete_acls(filters).values():
        future.result(timeout=30)
