"""A real ``stripe.StripeClient`` wired to a :class:`FakeStripe`.

``stripe`` is an optional dependency: it is imported when a client is built,
never when :mod:`spaktok_ledger.testing` is imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from spaktok_ledger.testing._fake_stripe import FakeStripe

if TYPE_CHECKING:
    import stripe

__all__ = ["stripe_client"]


def stripe_client(
    fake: FakeStripe | str,
    api_key: str = "sk_test_fake",
    *,
    timeout: float = 80.0,
    max_network_retries: int = 0,
    http_client: stripe.HTTPClient | None = None,
    **kwargs: Any,
) -> stripe.StripeClient:
    """A ``stripe.StripeClient`` whose API, Connect and files bases are the fake's URL.

    The transport is the SDK's own ``RequestsClient`` (what production uses),
    with ``timeout`` seconds per request and proxy variables from the
    environment ignored, so a CI proxy never sees the local traffic. Pass
    ``http_client`` to use another transport; other keyword arguments
    (``stripe_account``, ``stripe_version``...) go to ``StripeClient``.

    >>> with FakeStripe() as fake:  # doctest: +SKIP
    ...     client = stripe_client(fake, timeout=0.5, max_network_retries=2)
    ...     client.v1.accounts.create(params={"type": "express"}).id
    'acct_...'
    """
    import stripe

    base = fake.url if isinstance(fake, FakeStripe) else fake.rstrip("/")
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": base, "connect": base, "files": base},
        max_network_retries=max_network_retries,
        http_client=http_client or _local_requests_client_class()(timeout=timeout),
        **kwargs,
    )


class _EnvFreeSessions(threading.local):
    """Per-thread state whose ``session`` is a requests session ignoring the environment.

    The SDK's ``RequestsClient`` keeps one ``requests.Session`` per thread in
    ``_thread_local.session`` and creates it on first use; this one is created
    with ``trust_env=False`` so ``HTTP(S)_PROXY`` and ``~/.netrc`` stay away
    from the local fake.
    """

    def __init__(self, session_factory: Callable[[], Any]) -> None:
        self._session_factory = session_factory

    def __getattr__(self, name: str) -> Any:
        if name != "session":
            raise AttributeError(name)
        session = self._session_factory()
        session.trust_env = False
        self.session = session
        return session


@cache
def _local_requests_client_class() -> type[stripe.RequestsClient]:
    import stripe

    class LocalRequestsClient(stripe.RequestsClient):
        """The SDK's ``RequestsClient``, blind to proxy settings (see ``_EnvFreeSessions``)."""

        def __init__(self, timeout: float) -> None:
            super().__init__(timeout=timeout)
            self._thread_local = _EnvFreeSessions(self.requests.Session)

    return LocalRequestsClient
