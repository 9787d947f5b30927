# ruff: noqa: RUF012  (Django migrations declare their operations as class lists)
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="GiftOrder",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("sender_id", models.CharField(max_length=64)),
                ("streamer_id", models.CharField(max_length=64)),
                ("gift_id", models.CharField(max_length=64)),
                ("quantity", models.PositiveIntegerField()),
                ("entry_id", models.BigIntegerField(unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        # The host's rule: at most 100 items per order (see GiftOrder's docstring).
        migrations.RunSQL(
            "ALTER TABLE gifts_giftorder ADD CONSTRAINT gift_order_at_most_100 "
            "CHECK (quantity <= 100)",
            "ALTER TABLE gifts_giftorder DROP CONSTRAINT gift_order_at_most_100",
        ),
    ]
