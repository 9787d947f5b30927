from django.apps import AppConfig


class GiftsConfig(AppConfig):
    name = "examples.django_app.gifts"
    label = "gifts"
