from django.urls import path
from examples.django_app import views

urlpatterns = [
    path("api/quotes", views.create_quote),
    path("api/payments/create-checkout-session", views.create_checkout_session),
    path("api/payments/webhook", views.payments_webhook),
    path("api/gifts/send", views.send_gift),
    path("api/wallet/balance", views.wallet_balance),
    path("api/transactions", views.transactions),
    path("api/payouts/request", views.request_payout),
    path("api/payouts/webhook", views.payouts_webhook),
    path("api/openapi.json", views.openapi),
]

handler404 = "examples.django_app.views.not_found"
handler500 = "examples.django_app.views.server_error"
