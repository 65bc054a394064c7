"""ORM tables. Importing this package registers every table on ``Base.metadata``."""

from uploadpools.models.account import Account
from uploadpools.models.api_key import ApiKey
from uploadpools.models.delivery import Delivery
from uploadpools.models.engine_node import EngineNode
from uploadpools.models.firing import Firing
from uploadpools.models.idempotency import IdempotencyRecord
from uploadpools.models.item import QueueItem
from uploadpools.models.media import Media
from uploadpools.models.notification import Notification
from uploadpools.models.pool import Pool, Slot, SlotAccount
from uploadpools.models.pool_log import PoolStateChange
from uploadpools.models.usage import QuotaEntry
from uploadpools.models.user import User
from uploadpools.models.web_session import WebSession
from uploadpools.models.webhook import WebhookDelivery, WebhookEndpoint, WebhookEvent
from uploadpools.models.workspace import Membership, Workspace

__all__ = [
    "Account",
    "ApiKey",
    "Delivery",
    "EngineNode",
    "Firing",
    "IdempotencyRecord",
    "Media",
    "Membership",
    "Notification",
    "Pool",
    "PoolStateChange",
    "QueueItem",
    "QuotaEntry",
    "Slot",
    "SlotAccount",
    "User",
    "WebSession",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "Workspace",
]
