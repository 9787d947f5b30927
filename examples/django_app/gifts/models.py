"""The host application's own table: one row per gift order, next to the ledger's entry."""

from django.db import models


class GiftOrder(models.Model):
    """A gift as the host app records it. The database allows at most 100 items per
    order (a CHECK constraint in the migration): the host's own rule, which the API does
    not check up front, so an order over it fails at this row's INSERT, after the
    ledger wrote the gift, and the whole transaction rolls back."""

    sender_id = models.CharField(max_length=64)
    streamer_id = models.CharField(max_length=64)
    gift_id = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    entry_id = models.BigIntegerField(unique=True)  # the ledger's journal entry
    created_at = models.DateTimeField(auto_now_add=True)
